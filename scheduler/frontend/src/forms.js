// The three submission forms: video upload (drag and drop, upload progress), report and
// e-mail batch. Each form shows its outcome in its own status line.

import { postJson, uploadVideo } from "./api.js";

const MIB = 1024 * 1024;

/** Formats a byte count for the upload progress line: bytes, KB below 1 MB, then MB. */
function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < MIB) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / MIB).toFixed(1)} MB`;
}

/** Status line of one form: plain text, red for errors, with an optional retry countdown. */
class FormStatus {
  constructor(form) {
    this.node = form.querySelector(".form-status");
    this.submit = form.querySelector("button[type=submit]");
    this.timer = null;
  }

  show(text, kind = "info") {
    const colors = {
      info: "text-slate-600 dark:text-slate-400",
      success: "text-emerald-700 dark:text-emerald-400",
      error: "text-rose-700 dark:text-rose-400",
    };
    this.node.className = `form-status ${colors[kind]}`;
    this.node.textContent = text;
  }

  /** Shows `error`; after a 429 the submit button stays disabled until the retry time. */
  fail(error) {
    this.show(error.message, "error");
    if (error.status !== 429 || !error.retryAfter) return;
    clearInterval(this.timer);
    this.timer = null;
    const until = Date.now() + error.retryAfter * 1000;
    this.submit.disabled = true;
    const label = this.submit.dataset.label ?? this.submit.textContent;
    this.submit.dataset.label = label;
    const tick = () => {
      const left = Math.ceil((until - Date.now()) / 1000);
      if (left > 0) {
        this.submit.textContent = `Wait ${left} s`;
        return;
      }
      clearInterval(this.timer);
      this.timer = null;
      this.submit.textContent = label;
      this.submit.disabled = false;
    };
    tick();
    this.timer = setInterval(tick, 1000);
  }
}

/** Adds `run_at` or `delay_seconds` from the form's "when" controls to `target`. */
function readSchedule(form, target) {
  const when = form.elements.namedItem("when")?.value ?? "now";
  if (when === "delay") {
    const seconds = Number(form.elements.namedItem("delay_seconds").value);
    if (!Number.isFinite(seconds) || seconds <= 0) {
      throw new Error("Enter the delay as a number of seconds greater than 0.");
    }
    target.delay_seconds = seconds;
  } else if (when === "at") {
    const local = form.elements.namedItem("run_at").value;
    const time = Date.parse(local);
    if (!local || Number.isNaN(time)) throw new Error("Pick the date and time to run at.");
    target.run_at = new Date(time).toISOString();
  }
  return target;
}

/** Shows the delay or date input that matches the form's "when" choice. */
function wireSchedule(form) {
  const select = form.elements.namedItem("when");
  if (!select) return;
  const update = () => {
    for (const input of form.querySelectorAll("[data-when]")) {
      input.hidden = input.dataset.when !== select.value;
    }
  };
  select.addEventListener("change", update);
  update();
}

function localToIso(value) {
  if (!value) return undefined;
  const time = Date.parse(value);
  return Number.isNaN(time) ? undefined : new Date(time).toISOString();
}

function wireVideoForm(form, { maxUploadMb, onAccepted }) {
  const status = new FormStatus(form);
  const input = form.querySelector("#video-file");
  const dropZone = form.querySelector("#drop-zone");
  const fileName = form.querySelector("#video-file-name");
  const progress = form.querySelector("#upload-progress");
  const progressBar = progress.querySelector(".upload-bar");
  const progressText = progress.querySelector(".upload-text");
  const abortButton = progress.querySelector("#upload-abort");
  let file = null;
  let upload = null;

  const choose = (chosen) => {
    file = chosen ?? null;
    if (!file) {
      fileName.textContent = "No file chosen";
      return;
    }
    fileName.textContent = `${file.name} (${formatSize(file.size)})`;
    if (file.size > maxUploadMb * MIB) {
      status.show(`This file is larger than the ${maxUploadMb} MB limit.`, "error");
    } else {
      status.show("");
    }
  };

  input.addEventListener("change", () => choose(input.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    dropZone.addEventListener(type, (event) => {
      event.preventDefault();
      dropZone.dataset.dragging = "true";
    });
  }
  for (const type of ["dragleave", "drop"]) {
    dropZone.addEventListener(type, () => delete dropZone.dataset.dragging);
  }
  dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    choose(event.dataTransfer.files[0]);
  });
  abortButton.addEventListener("click", () => upload?.abort());

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!file) {
      status.show("Choose or drop a video file first.", "error");
      return;
    }
    const data = new FormData();
    data.append("file", file, file.name);
    data.append("height", form.elements.namedItem("height").value);
    data.append("thumbnails", form.elements.namedItem("thumbnails").value);
    try {
      for (const [key, value] of Object.entries(readSchedule(form, {}))) data.append(key, value);
    } catch (error) {
      status.show(error.message, "error");
      return;
    }

    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    progress.hidden = false;
    status.show("Uploading…");
    upload = uploadVideo(data, (loaded, total) => {
      const percent = total > 0 ? (loaded / total) * 100 : 0;
      progressBar.style.width = `${percent}%`;
      progressBar.parentElement.setAttribute("aria-valuenow", percent.toFixed(0));
      progressText.textContent = `${formatSize(loaded)} of ${formatSize(total)} (${percent.toFixed(0)}%)`;
    });
    try {
      const accepted = await upload.promise;
      status.show(`Queued as task ${accepted.task_id.slice(0, 8)}.`, "success");
      form.reset();
      choose(null);
      onAccepted(accepted.task_id);
    } catch (error) {
      status.fail(error);
    } finally {
      upload = null;
      progress.hidden = true;
      progressBar.style.width = "0%";
      if (!status.timer) submit.disabled = false;
    }
  });
}

function wireJsonForm(form, { url, buildPayload, describe, onAccepted }) {
  const status = new FormStatus(form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let payload;
    try {
      payload = readSchedule(form, buildPayload(form));
    } catch (error) {
      status.show(error.message, "error");
      return;
    }
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      const accepted = await postJson(url, payload);
      status.show(`${describe} queued as task ${accepted.task_id.slice(0, 8)}.`, "success");
      onAccepted(accepted.task_id);
    } catch (error) {
      status.fail(error);
    } finally {
      if (!status.timer) submit.disabled = false;
    }
  });
}

/** Connects every form on the page; `onAccepted(taskId)` runs for each accepted task. */
export function wireForms({ maxUploadMb, onAccepted }) {
  for (const form of document.querySelectorAll("form[data-schedule]")) wireSchedule(form);

  wireVideoForm(document.querySelector("#video-form"), { maxUploadMb, onAccepted });

  wireJsonForm(document.querySelector("#report-form"), {
    url: "/generate-report",
    describe: "Report",
    onAccepted,
    buildPayload: (form) => ({
      since: localToIso(form.elements.namedItem("since").value) ?? null,
      until: localToIso(form.elements.namedItem("until").value) ?? null,
    }),
  });

  wireJsonForm(document.querySelector("#email-form"), {
    url: "/send-emails",
    describe: "E-mail batch",
    onAccepted,
    buildPayload: (form) => {
      const recipients = form.elements
        .namedItem("recipients")
        .value.split(/[\s,;]+/)
        .filter(Boolean);
      if (recipients.length === 0) throw new Error("Enter at least one recipient address.");
      return {
        recipients,
        subject: form.elements.namedItem("subject").value,
        body: form.elements.namedItem("body").value,
      };
    },
  });
}
