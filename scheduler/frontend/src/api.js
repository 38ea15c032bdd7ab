// HTTP calls of the jobs page to the producer's REST API. Every failure becomes an ApiError
// whose message is ready to show: the server's JSON "error", or a plain description.

/** An HTTP failure: `status` is 0 for a network error, `retryAfter` is seconds for a 429. */
export class ApiError extends Error {
  constructor(message, status, retryAfter = null) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** Seconds to wait after a 429, from the JSON body or else the Retry-After header. */
function retryAfterSeconds(body, header) {
  const fromBody = Number(body?.retry_after);
  if (Number.isFinite(fromBody) && fromBody >= 0) return Math.ceil(fromBody);
  const fromHeader = Number(header);
  if (Number.isFinite(fromHeader) && fromHeader >= 0) return Math.ceil(fromHeader);
  return null;
}

/** Builds the ApiError for a response with status `status` and parsed JSON `body`. */
export function errorFromResponse(status, body, retryAfterHeader) {
  if (status === 429) {
    const seconds = retryAfterSeconds(body, retryAfterHeader);
    if (seconds === null) {
      return new ApiError("Too many requests: the rate limit was reached. Try again shortly.", 429);
    }
    const at = new Date(Date.now() + seconds * 1000).toLocaleTimeString();
    return new ApiError(
      `Too many requests: the rate limit was reached. Try again in ${seconds} s (at ${at}).`,
      429,
      seconds,
    );
  }
  const message = typeof body?.error === "string" ? body.error : `the server returned HTTP ${status}`;
  return new ApiError(`Request failed: ${message}`, status);
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

async function request(method, url, payload) {
  let response;
  try {
    response = await fetch(url, {
      method,
      headers: payload === undefined ? {} : { "Content-Type": "application/json" },
      body: payload === undefined ? undefined : JSON.stringify(payload),
    });
  } catch {
    throw new ApiError("The producer is not reachable: check that it is running.", 0);
  }
  const body = parseJson(await response.text());
  if (!response.ok) {
    throw errorFromResponse(response.status, body, response.headers.get("Retry-After"));
  }
  return body;
}

/** POSTs JSON and returns the accepted task, `{task_id, status_url}`. */
export function postJson(url, payload) {
  return request("POST", url, payload);
}

/** Returns one page of recent tasks: `{tasks, page, per_page, total}`. */
export function fetchTasks(page, perPage) {
  return request("GET", `/tasks?page=${page}&per_page=${perPage}`);
}

/** Returns one task by id. */
export function fetchTask(id) {
  return request("GET", `/tasks/${encodeURIComponent(id)}`);
}

/** Requests the cancellation of a task and returns its new state. */
export function cancelTask(id) {
  return request("DELETE", `/tasks/${encodeURIComponent(id)}`);
}

/**
 * Uploads `formData` to /process-video with XMLHttpRequest, because fetch reports no upload
 * progress. `onProgress(loaded, total)` is called as bytes leave the browser.
 * Returns `{promise, abort}`; the promise resolves to the accepted task.
 */
export function uploadVideo(formData, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open("POST", "/process-video");
    xhr.responseType = "text";
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.addEventListener("load", () => {
      const body = parseJson(xhr.responseText);
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(body);
      } else {
        reject(errorFromResponse(xhr.status, body, xhr.getResponseHeader("Retry-After")));
      }
    });
    xhr.addEventListener("error", () =>
      reject(new ApiError("The upload failed: the producer is not reachable.", 0)),
    );
    xhr.addEventListener("abort", () => reject(new ApiError("The upload was cancelled.", 0)));
    xhr.send(formData);
  });
  return { promise, abort: () => xhr.abort() };
}
