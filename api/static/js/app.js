// The page's entry: sign-in, the router (/ and /jobs/<id>, by the History API), the views.

import { api, session } from "./api.js";
import { $ } from "./dom.js";
import { JobStore } from "./jobs.js";
import { renderJobList } from "./views/job-list.js";
import { JobPage } from "./views/job-page.js";
import { setUpSubmitForm } from "./views/submit.js";

const store = new JobStore();
let jobPage = null;

function show(viewId) {
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== viewId;
  $("#account").hidden = viewId === "view-sign-in";
}

function navigate(path) {
  if (path !== location.pathname) history.pushState(null, "", path);
  route();
}

function route() {
  jobPage?.close();
  jobPage = null;
  if (!session.key) {
    show("view-sign-in");
    $("#api-key").focus();
    return;
  }
  const match = location.pathname.match(/^\/jobs\/([^/]+)$/);
  if (match) {
    show("view-job");
    jobPage = new JobPage($("#view-job"), store, decodeURIComponent(match[1]));
    return;
  }
  show("view-home");
  document.title = "Conveyor";
  store.pin(null);
  loadJobs();
}

async function loadJobs() {
  const error = $("#jobs-error");
  try {
    await store.loadList();
    error.hidden = true;
  } catch (failure) {
    error.textContent = `Could not load jobs: ${failure.message}`;
    error.hidden = false;
  }
}

function setUpSignIn() {
  $("#sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("#api-key").value.trim();
    const error = $("#sign-in-error");
    try {
      await api("/jobs?limit=1", { key }); // proves the key before keeping it
    } catch (failure) {
      error.textContent = failure.status === 401 ? "That key is unknown or revoked." : failure.message;
      error.hidden = false;
      return;
    }
    error.hidden = true;
    $("#api-key").value = "";
    session.signIn(key);
    route();
  });
  $("#sign-out").addEventListener("click", () => {
    session.signOut();
    store.clear();
    navigate("/");
  });
}

function setUpLinks() {
  // Same-origin links marked data-link change the view without reloading the page.
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-link]");
    if (!link || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    navigate(link.getAttribute("href"));
  });
  window.addEventListener("popstate", route);
}

setUpSignIn();
setUpLinks();
setUpSubmitForm(store);
store.subscribe(() => renderJobList($("#job-list"), $("#jobs-empty"), store));
$("#reload-jobs").addEventListener("click", loadJobs);
route();
