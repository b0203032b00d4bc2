"""The media work: probing a source, planning its ladder, parts and pictures, building and
running the ffmpeg commands (confined), and the playlists, stills and receipts they yield."""
