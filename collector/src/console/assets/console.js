// wiretrail console: live tables (server-sent events) and small helpers.
// Rows arrive as HTML rendered (and escaped) by the collector.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("tbody[data-live]").forEach(function (body) {
    var status = document.getElementById(body.dataset.status || "");
    var source = new EventSource(body.dataset.live);
    source.onmessage = function (e) {
      body.insertAdjacentHTML(body.dataset.order === "top" ? "afterbegin" : "beforeend", e.data);
      if (status) { status.textContent = "live: " + body.rows.length + " rows"; }
    };
    source.addEventListener("failure", function (e) {
      if (status) { status.textContent = "stopped: " + e.data; }
      source.close();
    });
    source.onerror = function () { if (status) { status.textContent = "reconnecting…"; } };
  });
  // A policy file picked from disk fills the text area (the page posts text).
  document.querySelectorAll("input[type=file][data-into]").forEach(function (input) {
    input.addEventListener("change", function () {
      var f = input.files[0];
      if (!f) { return; }
      f.text().then(function (t) { document.getElementById(input.dataset.into).value = t; });
    });
  });
});
