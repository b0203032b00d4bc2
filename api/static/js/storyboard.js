// Seek previews: a WebVTT whose cues name regions of one sprite image (`…#xywh=x,y,w,h`).

function seconds(timestamp) {
  const parts = timestamp.trim().split(":").map(Number);
  return parts.reduce((total, part) => total * 60 + part, 0);
}

export function parseStoryboardVtt(text, baseUrl) {
  const cues = [];
  const blocks = text.replace(/\r\n?/g, "\n").split(/\n{2,}/);
  for (const block of blocks) {
    const lines = block.split("\n").filter(Boolean);
    const timing = lines.findIndex((line) => line.includes("-->"));
    if (timing === -1 || !lines[timing + 1]) continue;
    const [start, end] = lines[timing].split("-->").map((part) => seconds(part.split(/\s/).filter(Boolean)[0]));
    const [image, fragment = ""] = lines[timing + 1].split("#");
    const region = fragment.match(/^xywh=(\d+),(\d+),(\d+),(\d+)$/);
    if (!region) continue;
    const [x, y, w, h] = region.slice(1).map(Number);
    cues.push({ start, end, image: new URL(image, baseUrl).href, x, y, w, h });
  }
  return cues;
}

export function cueAt(cues, time) {
  return cues.find((cue) => time >= cue.start && time < cue.end) ?? cues.at(-1) ?? null;
}

// A cue's image is relative to the VTT, or (on a private bucket) its own presigned URL.
export async function loadStoryboard(storyboard) {
  if (!storyboard?.vtt_url) return null;
  const response = await fetch(storyboard.vtt_url);
  if (!response.ok) throw new Error(`storyboard: HTTP ${response.status}`);
  return parseStoryboardVtt(await response.text(), storyboard.vtt_url);
}
