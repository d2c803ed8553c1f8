// pgcourier console: show every <time datetime="..."> in the browser's own zone, keeping the
// UTC reading (rendered by the server) in the title, where hovering shows it.
"use strict";
(function () {
  function pad(n) { return String(n).padStart(2, "0"); }
  function local(d) {
    const offset = -d.getTimezoneOffset();
    const sign = offset >= 0 ? "+" : "-";
    const zone = "UTC" + sign + pad(Math.floor(Math.abs(offset) / 60)) + ":" + pad(Math.abs(offset) % 60);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + " " +
      (offset === 0 ? "UTC" : zone);
  }
  function localise() {
    for (const el of document.querySelectorAll("time[datetime]")) {
      const d = new Date(el.getAttribute("datetime"));
      if (Number.isNaN(d.getTime())) continue;
      if (!el.title) el.title = el.textContent;
      el.textContent = local(d);
      el.classList.add("local");
    }
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", localise);
  } else {
    localise();
  }
})();
