// Applies the saved or system colour theme before the first paint, so a dark page never
// flashes white. Loaded synchronously in <head>; the app bundle takes over the toggle.
(function () {
  var saved = null
  try {
    saved = localStorage.getItem('codecollab.theme')
  } catch (error) {
    saved = null
  }
  var dark = saved ? saved === 'dark' : window.matchMedia('(prefers-color-scheme: dark)').matches
  document.documentElement.classList.toggle('dark', dark)
})()
