// Light and dark theme. theme-init.js sets the class before the first paint; this module
// keeps the toggle button, the stored choice and the editor theme in step.

const THEME_KEY = 'codecollab.theme'

/** Returns whether the page is in the dark theme. */
export function isDark() {
  return document.documentElement.classList.contains('dark')
}

function storedTheme() {
  try {
    return localStorage.getItem(THEME_KEY)
  } catch {
    return null
  }
}

/**
 * Wires the toggle button; `onChange(dark)` runs after every switch. Until the user picks a
 * theme, the page follows the system setting, also when it changes while the page is open.
 */
export function bindThemeToggle(button, onChange) {
  const apply = (dark) => {
    document.documentElement.classList.toggle('dark', dark)
    button.setAttribute('aria-pressed', String(dark))
    onChange(dark)
  }
  button.setAttribute('aria-pressed', String(isDark()))

  button.addEventListener('click', () => {
    const dark = !isDark()
    try {
      localStorage.setItem(THEME_KEY, dark ? 'dark' : 'light')
    } catch {
      // The choice then lasts only for this page.
    }
    apply(dark)
  })

  window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', (event) => {
    if (!storedTheme()) apply(event.matches)
  })
}
