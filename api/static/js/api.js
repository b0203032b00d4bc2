// The API client: the key lives in sessionStorage only, and every call sends it as a bearer token.

const KEY_NAME = "conveyor.apiKey";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  get key() {
    return sessionStorage.getItem(KEY_NAME);
  },
  signIn(key) {
    sessionStorage.setItem(KEY_NAME, key);
  },
  signOut() {
    sessionStorage.removeItem(KEY_NAME);
  },
};

export function authHeaders() {
  return { Authorization: `Bearer ${session.key}` };
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's error page): the status line says enough.
  }
  const error = body?.error ?? { code: `http_${response.status}`, message: response.statusText };
  return new ApiError(response.status, error.code, error.message);
}

export async function api(path, { method = "GET", body, key = session.key, signal } = {}) {
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

export const listJobs = (limit = 20) => api(`/jobs?limit=${limit}`);
export const getJob = (id, signal) => api(`/jobs/${encodeURIComponent(id)}`, { signal });
export const retryJob = (id) => api(`/jobs/${encodeURIComponent(id)}/retry`, { method: "POST" });
export const cancelJob = (id) => api(`/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
export const submitUrl = (url, options) => api("/jobs", { method: "POST", body: { source: { url }, options } });

// fetch() cannot report upload progress; XMLHttpRequest can.
export function uploadFile(file, options, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("options", JSON.stringify(options));
    form.append("file", file);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/uploads");
    xhr.setRequestHeader("Authorization", `Bearer ${session.key}`);
    xhr.responseType = "json";
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    xhr.upload.onload = () => onProgress(1);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) return resolve(xhr.response);
      const error = xhr.response?.error ?? { code: `http_${xhr.status}`, message: xhr.statusText };
      reject(new ApiError(xhr.status, error.code, error.message));
    };
    xhr.onerror = () => reject(new ApiError(0, "network", "The upload could not reach the server."));
    xhr.send(form);
  });
}
