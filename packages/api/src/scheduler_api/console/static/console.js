// The console's only script: keeps the regions marked data-live up to date without a reload.
// Pages work without it. `subscribe` is the one place that decides *when* to refresh: on the
// console's event stream (/ui/events, the API's event log with the session cookie), every
// event only marks the page stale and one refresh follows within BATCH_MS — a throttle, not a
// debounce: events arriving faster than that never postpone a refresh already due, so a page
// under 500 events/s still refreshes twice a second — and the swap itself waits for the next
// animation frame. The tab's work does not grow with the event rate, and what it keeps is one
// page of rows. A slow poll covers what no event announces, polling takes over when the
// stream is unavailable, and nothing runs while the tab is hidden.
"use strict";

(function () {
  const BATCH_MS = 500;
  const POLL_MS = 2000;
  const SLOW_POLL_MS = 10000;

  function subscribe(streamUrl, onChange) {
    let stale = false;
    let busy = false;
    let timer = null;
    let due = 0; // when the pending timer fires (ms since the page loaded)
    let period = POLL_MS;

    function visible() {
      return document.visibilityState === "visible";
    }
    function run() {
      timer = null;
      due = 0;
      if (!visible()) return;
      if (busy) {
        later(BATCH_MS);
        return;
      }
      busy = true;
      stale = false;
      onChange().finally(function () {
        busy = false;
        later(stale ? BATCH_MS : period);
      });
    }
    function later(delay) {
      const at = performance.now() + delay;
      if (timer !== null) {
        if (due <= at) return; // an earlier refresh is already due: never postpone it
        window.clearTimeout(timer);
      }
      due = at;
      timer = window.setTimeout(run, delay);
    }
    function changed() {
      stale = true;
      if (visible() && !busy) later(BATCH_MS);
    }

    if (streamUrl && window.EventSource) {
      const source = new EventSource(streamUrl);
      source.addEventListener("change", changed);
      source.addEventListener("open", function () { period = SLOW_POLL_MS; });
      source.addEventListener("error", function () {
        period = POLL_MS; // until it reconnects, poll as if there were no stream
        if (source.readyState === EventSource.CLOSED) later(POLL_MS);
      });
    }
    document.addEventListener("visibilitychange", function () {
      if (visible()) later(0);
    });
    later(period);
  }

  function nextFrame() {
    return new Promise(function (resolve) { window.requestAnimationFrame(resolve); });
  }

  async function refresh() {
    const response = await fetch(window.location.href, {
      headers: { "X-Console-Live": "1" },
      credentials: "same-origin",
      cache: "no-store",
    }).catch(function () { return null; });
    if (response === null) return;
    if (response.status === 401) {
      window.location.reload();
      return;
    }
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    await nextFrame();
    document.querySelectorAll("[data-live]").forEach(function (region) {
      if (region.contains(document.activeElement) && document.activeElement !== document.body) {
        return; // never pull a control away from someone using it
      }
      if (region.querySelector("input[type=checkbox]:checked") !== null) {
        return; // nor a selection someone is making (it refreshes once nothing is ticked)
      }
      const next = fresh.getElementById(region.id);
      if (next !== null && next.innerHTML !== region.innerHTML) {
        region.replaceWith(document.importNode(next, true));
      }
    });
  }

  // A running run's output, from its own stream (/ui/runs/{id}/output): each message says at
  // which offset its text starts, so a duplicate after a reconnect is skipped; `reset` starts
  // over (the outcome replaced the text). Text is only ever added as text, never as markup.
  function followOutput(pre) {
    let next = Number(pre.getAttribute("data-offset")) || 0;
    const source = new EventSource(pre.getAttribute("data-stream") + "?offset=" + next);
    function clearPlaceholder() {
      if (pre.hasAttribute("data-empty")) {
        pre.removeAttribute("data-empty");
        pre.textContent = "";
      }
    }
    source.addEventListener("output", function (event) {
      const data = JSON.parse(event.data);
      if (data.at !== next || typeof data.text !== "string") return;
      clearPlaceholder();
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.append(data.text);
      next = data.next;
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    });
    source.addEventListener("reset", function () {
      pre.textContent = "";
      pre.removeAttribute("data-empty");
      next = 0;
    });
    source.addEventListener("end", function () { source.close(); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const live = document.querySelector("[data-live]");
    if (live !== null) subscribe(live.getAttribute("data-events"), refresh);
    const output = document.getElementById("run-output");
    if (output !== null && output.hasAttribute("data-stream") && window.EventSource) {
      followOutput(output);
    }
    document.querySelectorAll("button.danger").forEach(function (button) {
      button.form.addEventListener("submit", function (event) {
        if (!window.confirm(button.textContent.trim() + "?")) event.preventDefault();
      });
    });
  });
})();
