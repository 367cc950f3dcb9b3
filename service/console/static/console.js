// provatar console: small progressive enhancements only; every page works without JavaScript.
"use strict";
(function () {
  // Size the detection report's frame to its content (same-origin srcdoc, no scripts inside).
  function fitFrame(frame) {
    try {
      var doc = frame.contentDocument;
      if (doc && doc.documentElement) {
        frame.style.height = doc.documentElement.scrollHeight + 24 + "px";
      }
    } catch (e) { /* keep the CSS height */ }
  }
  document.querySelectorAll("iframe.report").forEach(function (frame) {
    frame.addEventListener("load", function () { fitFrame(frame); });
    window.addEventListener("resize", function () { fitFrame(frame); });
    fitFrame(frame);
  });
  // Long uploads: say that something is happening and stop a second submission.
  document.querySelectorAll("form[data-busy]").forEach(function (form) {
    form.addEventListener("submit", function () {
      var note = form.querySelector(".busy");
      if (note) { note.textContent = form.getAttribute("data-busy"); }
      form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
    });
  });
})();
