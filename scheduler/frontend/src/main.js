// Entry point of the jobs page: wires the forms and the live task list.

import { wireForms } from "./forms.js";
import { TaskList } from "./tasks.js";

function notifier() {
  const banner = document.querySelector("#page-message");
  return (text, isError) => {
    banner.textContent = text;
    banner.hidden = !text;
    banner.dataset.kind = isError ? "error" : "info";
  };
}

function start() {
  const notify = notifier();
  const tasks = new TaskList({
    root: document.querySelector("#task-list"),
    emptyNote: document.querySelector("#task-empty"),
    moreButton: document.querySelector("#task-more"),
    liveStatus: document.querySelector("#live-status"),
    notify,
  });
  const maxUploadMb = Number(document.body.dataset.maxUploadMb) || 500;
  wireForms({ maxUploadMb, onAccepted: (taskId) => tasks.track(taskId) });
  tasks.start();
}

start();
