// How numbers, times and statuses read on the page.

export function clock(seconds) {
  if (!Number.isFinite(seconds)) return "0:00";
  const whole = Math.max(0, Math.floor(seconds));
  const h = Math.floor(whole / 3600);
  const m = Math.floor((whole % 3600) / 60);
  const s = String(whole % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60);
  return `${m} min ${Math.round(seconds % 60)} s`;
}

export function between(startIso, endIso) {
  if (!startIso) return null;
  const end = endIso ? Date.parse(endIso) : Date.now();
  return (end - Date.parse(startIso)) / 1000;
}

export function bytes(count) {
  if (count === null || count === undefined) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

export function bitrate(bitsPerSecond) {
  if (!bitsPerSecond) return "—";
  return bitsPerSecond >= 1e6 ? `${(bitsPerSecond / 1e6).toFixed(1)} Mb/s` : `${Math.round(bitsPerSecond / 1e3)} kb/s`;
}

export function when(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function number(value, digits = 1, unit = "") {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  return `${value.toFixed(digits)}${unit ? ` ${unit}` : ""}`;
}

export function sourceName(job) {
  const source = job.source ?? {};
  if (source.upload) return source.upload.filename ?? "upload";
  if (source.url) return source.url;
  if (source.s3) return `s3://${source.s3.bucket ?? ""}/${source.s3.key ?? ""}`;
  if (source.generate) return `generated: ${source.generate.prompt}`;
  return Object.keys(source)[0] ?? "—";
}

// A rendition's quality receipt in a few words: VMAF (0-100) with its 5th percentile, or PSNR.
export function quality(receipt) {
  if (!receipt) return "quality not measured";
  if (receipt.metric === "vmaf") return `VMAF ${receipt.vmaf_mean.toFixed(1)} (5% ≥ ${receipt.vmaf_p5.toFixed(1)})`;
  return `PSNR ${receipt.psnr_mean.toFixed(1)} dB, SSIM ${receipt.ssim_mean.toFixed(3)}`;
}
