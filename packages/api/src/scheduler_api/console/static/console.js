// The console's only script: keeps the regions marked data-live up to date without a reload.
// Pages work without it. `subscribe` is the one place that decides *when* to refresh: today a
// fetch of the page every 2 s while the tab is visible; it can become an EventSource on the
// API's event stream without touching the rest.
"use strict";

(function () {
  const PERIOD_MS = 2000;

  function subscribe(onChange) {
    let timer = null;
    function tick() {
      timer = null;
      if (document.visibilityState !== "visible") return;
      onChange().finally(schedule);
    }
    function schedule() {
      if (timer === null && document.visibilityState === "visible") {
        timer = window.setTimeout(tick, PERIOD_MS);
      }
    }
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible") schedule();
    });
    schedule();
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
    document.querySelectorAll("[data-live]").forEach(function (region) {
      if (region.contains(document.activeElement) && document.activeElement !== document.body) {
        return; // never pull a control away from someone using it
      }
      const next = fresh.getElementById(region.id);
      if (next !== null && next.innerHTML !== region.innerHTML) {
        region.replaceWith(document.importNode(next, true));
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (document.querySelector("[data-live]") !== null) subscribe(refresh);
    document.querySelectorAll("button.danger").forEach(function (button) {
      button.form.addEventListener("submit", function (event) {
        if (!window.confirm(button.textContent.trim() + "?")) event.preventDefault();
      });
    });
  });
})();
