// Light and dark: follows the system until the toggle picks one, remembered in localStorage.

import { $ } from "./dom.js";

const KEY = "tq-theme";

function saved() {
  try {
    const value = localStorage.getItem(KEY);
    return value === "light" || value === "dark" ? value : null;
  } catch {
    return null;
  }
}

export function initTheme(onChange) {
  const root = document.documentElement;
  const media = matchMedia("(prefers-color-scheme: dark)");
  const apply = () => {
    const choice = saved();
    if (choice) root.dataset.theme = choice;
    else delete root.dataset.theme;
    const effective = choice || (media.matches ? "dark" : "light");
    const changed = root.dataset.effectiveTheme !== effective;
    root.dataset.effectiveTheme = effective;
    $("#theme-toggle").setAttribute("aria-label", `Switch to ${effective === "dark" ? "light" : "dark"} theme`);
    if (changed) onChange(effective);
  };
  media.addEventListener("change", apply);
  $("#theme-toggle").addEventListener("click", () => {
    const next = root.dataset.effectiveTheme === "dark" ? "light" : "dark";
    try {
      localStorage.setItem(KEY, next);
    } catch {
      root.dataset.theme = next;
    }
    apply();
  });
  apply();
}
