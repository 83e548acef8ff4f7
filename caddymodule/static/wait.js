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
  var words = {};
  try { words = JSON.parse(remaining ? remaining.getAttribute("data-words") : "{}") || {}; } catch (e) { words = {}; }
  var done = false;
  var inflight = null;

  // One path wins: once the page itself submits (Continue, or the code
  // form, which signs in on its own), poll answers no longer act, or they
  // would post complete or reload under the submission and land on a page
  // for a sign-in that is already over.
  function stop() {
    done = true;
    if (inflight) { inflight.abort(); }
  }
  var forms = document.querySelectorAll("form");
  for (var i = 0; i < forms.length; i++) { forms[i].addEventListener("submit", stop); }

  function finish() {
    if (done) { return; }
    stop();
    form.submit();
  }

  // The server's wording of durations (locale Catalog.Duration), in the
  // page's language: seconds under a minute, else hours and minutes,
  // rounded to the minute.
  function unit(n, name) {
    var w = words[name] || ["{1} " + name, "{1} " + name + "s"];
    return (n === 1 ? w[0] : w[1]).replace("{1}", String(n));
  }
  function human(s) {
    if (s < 60) { return unit(s, "second"); }
    var total = Math.round(s / 60), h = Math.floor(total / 60), m = total % 60;
    if (h === 0) { return unit(m, "minute"); }
    if (m === 0) { return unit(h, "hour"); }
    return (words.join || "{1} {2}").replace("{1}", unit(h, "hour")).replace("{2}", unit(m, "minute"));
  }

  function tick() {
    if (!remaining) { return; }
    left = Math.max(0, left - 1);
    remaining.textContent = human(left);
  }

  // "Send again" waits out its cooldown, which the server enforces too.
  var resend = document.getElementById("resend");
  var resendWait = document.getElementById("resend-wait");
  var cooldown = resend ? parseInt(resend.getAttribute("data-cooldown") || "0", 10) : 0;
  function resendTick() {
    if (!resend || cooldown <= 0) { return; }
    cooldown -= 1;
    if (cooldown <= 0) {
      resend.disabled = false;
      resend.removeAttribute("aria-describedby");
      if (resendWait) { resendWait.hidden = true; }
    } else if (resendWait) {
      resendWait.textContent = resendWait.getAttribute("data-template").replace("{s}", String(cooldown));
    }
  }

  function poll() {
    if (done) { return; }
    var started = Date.now();
    inflight = typeof AbortController === "function" ? new AbortController() : null;
    fetch("/.mailauth/status?wait=pending", { credentials: "same-origin", cache: "no-store", signal: inflight ? inflight.signal : undefined })
      .then(function (r) { return r.json(); })
      .then(function (s) {
        if (done) { return; }
        if (s.state === "approved") { finish(); return; }
        if (s.state !== "pending") { stop(); window.location.reload(); return; }
        // A server that answers at once (a buffering proxy, an instance
        // shutting down) must not turn this into a busy loop.
        setTimeout(poll, Date.now() - started < 1000 ? 2000 : 0);
      })
      .catch(function () { if (!done) { setTimeout(poll, 3000); } });
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
  setInterval(function () { tick(); resendTick(); }, 1000);
  poll();
  setTimeout(checkDelay, 6000);
})();
