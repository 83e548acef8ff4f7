// Rewords every time on the page in the browser's own time zone and
// language. The server writes them in UTC, which is what a browser
// without JavaScript shows.
(function () {
  "use strict";
  var lang = document.documentElement.lang || undefined;
  var times = document.querySelectorAll("time[datetime]");
  for (var i = 0; i < times.length; i++) {
    var el = times[i], at = new Date(el.getAttribute("datetime"));
    if (isNaN(at.getTime())) { continue; }
    try {
      el.textContent = at.toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit", hour12: false, timeZoneName: "short" });
    } catch (e) {
      continue;
    }
  }
})();
