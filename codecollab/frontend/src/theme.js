// Light and dark theme. theme-init.js sets the class before the first paint; this module
// keeps the toggle button, the stored choice and the editor theme in step.

const THEME_KEY = 'codecollab.theme'

/** Returns whether the page is in the dark theme. */
export function isDark() {
  return document.documentElement.classList.contains('dark')
}

/** Wires the toggle button; `onChange(dark)` runs after every switch. */
export function bindThemeToggle(button, onChange) {
  const sync = () => button.setAttribute('aria-pressed', String(isDark()))
  sync()
  button.addEventListener('click', () => {
    const dark = !isDark()
    document.documentElement.classList.toggle('dark', dark)
    try {
      localStorage.setItem(THEME_KEY, dark ? 'dark' : 'light')
    } catch {
      // The choice then lasts only for this page.
    }
    sync()
    onChange(dark)
  })
}
