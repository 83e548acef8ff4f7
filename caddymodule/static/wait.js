// Polls the login's state and moves on by itself once it is approved. The
// page also works without JavaScript: a meta refresh reloads it and the
// Continue button submits the same form.
(function () {
  "use strict";
  var root = document.getElementById("waiting");
  var form = document.getElementById("complete");
  if (!root || !form) { return; }
  var remaining = document.getElementById("remaining");
  var left = remaining ? parseInt(remaining.getAttribute("data-expires-in"), 10) : 0;
  var done = false;

  function finish() {
    if (done) { return; }
    done = true;
    form.submit();
  }

  function tick() {
    if (!remaining) { return; }
    left = Math.max(0, left - 1);
    // Same wording as the server renders: whole minutes, then seconds.
    var m = Math.ceil(left / 60);
    remaining.textContent = left >= 120 ? m + " minutes" : left + (left === 1 ? " second" : " seconds");
  }

  function poll() {
    if (done) { return; }
    fetch("/.mailauth/status", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(function (s) {
        if (s.state === "approved") { finish(); return; }
        if (s.state !== "pending") { done = true; window.location.reload(); return; }
        setTimeout(poll, 1000);
      })
      .catch(function () { setTimeout(poll, 3000); });
  }

  if (root.getAttribute("data-state") === "approved") { finish(); return; }
  setInterval(tick, 1000);
  poll();
})();
