"""What a video holds: the analyze stage's backends (`local`, one ffmpeg pass; `gemini`) and
`backends`, which chooses one per job and folds its answer into the stage's output."""
