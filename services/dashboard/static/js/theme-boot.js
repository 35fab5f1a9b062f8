// Runs before first paint (a classic script, no inline code under the CSP): apply the saved theme.
(function () {
  var saved = null;
  try { saved = localStorage.getItem("tq-theme"); } catch (e) { /* storage may be off */ }
  var root = document.documentElement;
  if (saved === "light" || saved === "dark") root.setAttribute("data-theme", saved);
  var dark = saved ? saved === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  root.setAttribute("data-effective-theme", dark ? "dark" : "light");
})();
