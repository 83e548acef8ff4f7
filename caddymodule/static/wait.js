// Waits for the login's state to change and moves on by itself once it is
// approved. Each status request is a long poll: the server holds it until
// the state changes (or about 25 seconds pass), so a waiting tab makes one
// request per change instead of one a second. The page also works without
// JavaScript: a meta refresh reloads it and the Continue button submits the
// same form.
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
    remaining.textContent = human(left);
  }

  // The server's wording (mailer.HumanDuration): seconds under a minute,
  // else hours and minutes, rounded to the minute.
  function plural(n, unit) { return n + " " + unit + (n === 1 ? "" : "s"); }
  function human(s) {
    if (s < 60) { return plural(s, "second"); }
    var total = Math.round(s / 60), h = Math.floor(total / 60), m = total % 60;
    if (h === 0) { return plural(m, "minute"); }
    return m === 0 ? plural(h, "hour") : plural(h, "hour") + " " + plural(m, "minute");
  }

  function poll() {
    if (done) { return; }
    var started = Date.now();
    fetch("/.mailauth/status?wait=pending", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(function (s) {
        if (s.state === "approved") { finish(); return; }
        if (s.state !== "pending") { done = true; window.location.reload(); return; }
        // A server that answers at once (a buffering proxy, an instance
        // shutting down) must not turn this into a busy loop.
        setTimeout(poll, Date.now() - started < 1000 ? 2000 : 0);
      })
      .catch(function () { setTimeout(poll, 3000); });
  }

  // The long poll answers only on a change of state, so whether mail is
  // delayed (the site's mail queue is behind) is asked separately.
  var delayed = document.getElementById("mail-delayed");
  function checkDelay() {
    if (done || !delayed) { return; }
    fetch("/.mailauth/status", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(function (s) { delayed.hidden = !s.mail_delayed; })
      .catch(function () {})
      .then(function () { setTimeout(checkDelay, 10000); });
  }

  if (root.getAttribute("data-state") === "approved") { finish(); return; }
  setInterval(tick, 1000);
  poll();
  setTimeout(checkDelay, 6000);
})();
