// The list of recent tasks, kept live by the producer's Server-Sent Events stream.
// Every value from the server is inserted with textContent or as an attribute, never as HTML.

import { cancelTask, fetchTask, fetchTasks } from "./api.js";

const PER_PAGE = 20;
const ACTIVE_STATES = new Set(["queued", "started", "progress", "retrying"]);
const KIND_LABELS = {
  "process-video": "Video",
  "generate-report": "Report",
  "send-emails": "E-mails",
};
const STATE_STYLES = {
  queued: "bg-slate-100 text-slate-700 dark:bg-slate-800 dark:text-slate-300",
  started: "bg-sky-100 text-sky-800 dark:bg-sky-900/50 dark:text-sky-300",
  progress: "bg-sky-100 text-sky-800 dark:bg-sky-900/50 dark:text-sky-300",
  retrying: "bg-amber-100 text-amber-800 dark:bg-amber-900/50 dark:text-amber-300",
  succeeded: "bg-emerald-100 text-emerald-800 dark:bg-emerald-900/50 dark:text-emerald-300",
  failed: "bg-rose-100 text-rose-800 dark:bg-rose-900/50 dark:text-rose-300",
  cancelled: "bg-slate-200 text-slate-600 dark:bg-slate-800 dark:text-slate-400",
};
const BAR_STYLES = {
  succeeded: "bg-emerald-500",
  failed: "bg-rose-500",
  cancelled: "bg-slate-400",
  retrying: "bg-amber-500",
};
const IMAGE_NAME = /\.(jpe?g|png|webp)$/i;
const VIDEO_NAME = /\.(mp4|m4v|webm|mkv)$/i;

function element(tag, className = "", text = "") {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

function timeOf(record) {
  const parsed = Date.parse(record.updated_at ?? "");
  return Number.isNaN(parsed) ? 0 : parsed;
}

function formatTime(iso) {
  const parsed = Date.parse(iso ?? "");
  return Number.isNaN(parsed) ? "" : new Date(parsed).toLocaleString();
}

/** Live list of task cards inside `root`, with a "load more" button and a status badge. */
export class TaskList {
  constructor({ root, emptyNote, moreButton, liveStatus, notify }) {
    this.root = root;
    this.emptyNote = emptyNote;
    this.moreButton = moreButton;
    this.liveStatus = liveStatus;
    this.notify = notify; // shows a message to the user: notify(text, isError)
    this.records = new Map(); // task id -> latest record
    this.cards = new Map(); // task id -> <li> card
    this.nextPage = 1;
    this.total = 0;
    this.moreButton.addEventListener("click", () => this.loadPage());
  }

  /** Opens the event stream, then loads the first page, so no change falls in between. */
  async start() {
    this.connect();
    await this.loadPage();
  }

  connect() {
    this.source = new EventSource("/tasks/stream");
    this.source.addEventListener("open", () => this.setLive("live"));
    this.source.addEventListener("error", () => {
      // EventSource reconnects by itself and sends Last-Event-ID, so missed changes arrive.
      this.setLive(this.source.readyState === EventSource.CLOSED ? "offline" : "reconnecting");
    });
    this.source.addEventListener("task", (event) => {
      try {
        this.upsert(JSON.parse(event.data), { prepend: true });
      } catch (error) {
        console.error("invalid task event", error, event.data);
      }
    });
  }

  setLive(state) {
    const labels = { live: "Live", reconnecting: "Reconnecting…", offline: "Offline" };
    this.liveStatus.textContent = labels[state];
    this.liveStatus.dataset.state = state;
  }

  async loadPage() {
    this.moreButton.disabled = true;
    try {
      const page = await fetchTasks(this.nextPage, PER_PAGE);
      for (const record of page.tasks) this.upsert(record, { prepend: false });
      this.total = page.total;
      this.nextPage = page.page + 1;
    } catch (error) {
      this.notify(error.message, true);
    } finally {
      this.moreButton.disabled = false;
      this.moreButton.hidden = this.records.size >= this.total;
      this.emptyNote.hidden = this.records.size > 0;
    }
  }

  /** Shows a task that was just submitted, before its first event arrives. */
  async track(taskId) {
    try {
      this.upsert(await fetchTask(taskId), { prepend: true });
    } catch (error) {
      this.notify(error.message, true);
    }
  }

  /** Adds or updates the card of `record`, ignoring a record older than the one shown. */
  upsert(record, { prepend }) {
    const known = this.records.get(record.id);
    if (known && timeOf(known) > timeOf(record)) return;
    if (!known) this.total += prepend ? 1 : 0;
    this.records.set(record.id, record);

    const card = this.renderCard(record);
    const existing = this.cards.get(record.id);
    if (existing) {
      existing.replaceWith(card);
    } else if (prepend) {
      this.root.prepend(card);
    } else {
      this.root.append(card);
    }
    this.cards.set(record.id, card);
    this.emptyNote.hidden = true;
  }

  renderCard(record) {
    const card = element("li", "card flex flex-col gap-3");
    card.dataset.taskId = record.id;
    card.dataset.state = record.state;
    card.append(this.renderHeader(record), this.renderProgress(record));

    if (record.state === "failed" && record.error) {
      const error = element(
        "p",
        "task-error rounded-lg bg-rose-50 p-3 text-sm text-rose-800 dark:bg-rose-950/50 dark:text-rose-300",
        `Error: ${record.error}`,
      );
      card.append(error);
    }
    if (record.state === "succeeded" && record.result) {
      card.append(this.renderResult(record));
    }
    return card;
  }

  renderHeader(record) {
    const header = element("div", "flex flex-wrap items-center gap-x-3 gap-y-1");
    header.append(
      element("span", "font-semibold", KIND_LABELS[record.kind] ?? record.kind),
      element(
        "span",
        `task-state rounded-full px-2 py-0.5 text-xs font-medium ${STATE_STYLES[record.state] ?? ""}`,
        record.state,
      ),
    );
    const id = element("code", "text-xs text-slate-500", record.id.slice(0, 8));
    id.title = record.id;
    header.append(id);

    const when = element("span", "ml-auto text-xs text-slate-500", formatTime(record.created_at));
    header.append(when);

    if (ACTIVE_STATES.has(record.state)) {
      const cancel = element("button", "button-secondary task-cancel", "Cancel");
      cancel.type = "button";
      cancel.setAttribute("aria-label", `Cancel task ${record.id}`);
      cancel.addEventListener("click", () => this.cancel(record.id, cancel));
      header.append(cancel);
    }
    return header;
  }

  renderProgress(record) {
    const percent = Math.max(0, Math.min(100, Number(record.percent) || 0));
    const wrapper = element("div", "flex flex-col gap-1");
    const track = element("div", "h-2.5 overflow-hidden rounded-full bg-slate-200 dark:bg-slate-800");
    track.setAttribute("role", "progressbar");
    track.setAttribute("aria-valuemin", "0");
    track.setAttribute("aria-valuemax", "100");
    track.setAttribute("aria-valuenow", String(percent));
    track.setAttribute("aria-label", `Progress of task ${record.id}`);
    const bar = element(
      "div",
      `task-bar h-full rounded-full transition-[width] duration-300 ${BAR_STYLES[record.state] ?? "bg-indigo-500"}`,
    );
    bar.style.width = `${percent}%`;
    track.append(bar);

    const caption = element("div", "flex justify-between gap-3 text-xs text-slate-600 dark:text-slate-400");
    caption.append(
      element("span", "task-message truncate", record.message || ""),
      element("span", "task-percent tabular-nums", `${percent.toFixed(0)}%`),
    );
    wrapper.append(track, caption);
    return wrapper;
  }

  renderResult(record) {
    const files = Array.isArray(record.result.files) ? record.result.files : [];
    const box = element("div", "task-result flex flex-col gap-3");

    const images = files.filter((file) => IMAGE_NAME.test(file.name));
    if (images.length > 0) {
      const strip = element("div", "flex flex-wrap gap-2");
      images.forEach((file, index) => {
        const link = element("a");
        link.href = file.url;
        link.target = "_blank";
        link.rel = "noopener";
        const image = element("img", "task-thumbnail h-20 w-auto rounded-md ring-1 ring-slate-200 dark:ring-slate-700");
        image.src = file.url;
        image.alt = `Thumbnail ${index + 1} of ${images.length}`;
        image.loading = "lazy";
        link.append(image);
        strip.append(link);
      });
      box.append(strip);
    }

    const links = element("div", "flex flex-wrap gap-2");
    for (const file of files.filter((f) => !IMAGE_NAME.test(f.name))) {
      const link = element("a", "button-secondary task-download");
      link.href = file.url;
      link.download = file.name;
      const output = record.result.output;
      const detail = VIDEO_NAME.test(file.name) && output?.height ? ` (${output.height}p)` : "";
      link.textContent = `Download ${file.name}${detail}`;
      links.append(link);
    }
    if (links.childElementCount > 0) box.append(links);

    const summary = this.summarise(record);
    if (summary) box.append(element("p", "text-sm text-slate-600 dark:text-slate-400", summary));
    return box;
  }

  /** Summarises the result in one line: video size and duration, report totals or e-mail counts. */
  summarise(record) {
    const result = record.result;
    if (result.output?.width && result.source?.duration !== undefined) {
      const seconds = Number(result.source.duration).toFixed(1);
      return `${result.output.width}×${result.output.height}, ${seconds} s, ${result.output.frames ?? "?"} frames`;
    }
    if (result.counts && typeof result.counts === "object") {
      return Object.entries(result.counts)
        .map(([status, count]) => `${status}: ${count}`)
        .join(" · ");
    }
    if (typeof result.tasks === "number") return `${result.tasks} tasks in the period`;
    return "";
  }

  async cancel(taskId, button) {
    button.disabled = true;
    try {
      this.upsert(await cancelTask(taskId), { prepend: false });
    } catch (error) {
      this.notify(error.message, true);
      button.disabled = false;
    }
  }
}
