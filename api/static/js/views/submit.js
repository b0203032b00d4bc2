// The new-job form: an upload with a progress bar, or a URL; renditions and analysis backend.

import { submitUrl, uploadFile } from "../api.js";
import { $ } from "../dom.js";

function chosenOptions(form) {
  const renditions = [...form.querySelectorAll("input[name=rendition]:checked")].map((box) => box.value);
  return { renditions, analysis: { backend: form.elements.backend.value } };
}

function showProgress(fraction) {
  const percent = Math.round(fraction * 100);
  $("#upload-progress").hidden = false;
  $("#upload-bar").value = percent;
  $("#upload-percent").textContent = `${percent}%`;
}

export function setUpSubmitForm(store) {
  const form = $("#submit-form");
  const error = $("#submit-error");
  const button = $("#submit-button");

  const showSource = () => {
    for (const part of form.querySelectorAll("[data-source]")) {
      part.hidden = part.dataset.source !== form.elements.source.value;
    }
  };
  form.addEventListener("change", (event) => event.target.name === "source" && showSource());

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const options = chosenOptions(form);
    if (!options.renditions.length) {
      error.textContent = "Pick at least one rendition.";
      error.hidden = false;
      return;
    }
    const byUpload = form.elements.source.value === "file";
    const file = $("#file-input").files[0];
    const url = $("#url-input").value.trim();
    if (byUpload ? !file : !url) {
      error.textContent = byUpload ? "Choose a file to upload." : "Paste the URL of a video.";
      error.hidden = false;
      return;
    }
    button.disabled = true;
    try {
      if (byUpload) showProgress(0);
      const job = byUpload ? await uploadFile(file, options, showProgress) : await submitUrl(url, options);
      store.added(job);
      // Clear what was sent, unless the user has already chosen the next one; the
      // renditions and backend stay as they were for the next job.
      if (byUpload && $("#file-input").files[0] === file) $("#file-input").value = "";
      if (!byUpload && $("#url-input").value.trim() === url) $("#url-input").value = "";
    } catch (failure) {
      error.textContent = `${failure.code ? `${failure.code}: ` : ""}${failure.message}`;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
}
