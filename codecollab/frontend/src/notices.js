// Toasts and banners at the bottom of the page. Text is always set with textContent, so a
// server message or a peer's name can never inject markup.

const DEFAULT_TIMEOUT_MS = 6000

/**
 * Shows a notice and returns a function that removes it. A notice with the same `id` as a
 * visible one replaces it, so a repeated error shows once.
 *
 * @param {object} options
 * @param {string} options.message text to show
 * @param {'info' | 'error'} [options.kind] colour and ARIA role
 * @param {string} [options.id] replaces the visible notice with this id
 * @param {number | null} [options.timeout] ms until it hides itself; null keeps it until dismissed
 * @param {{label: string, run: () => void}} [options.action] one button next to the text
 */
export function showNotice({ message, kind = 'info', id, timeout = DEFAULT_TIMEOUT_MS, action }) {
  const container = document.getElementById('notices')
  if (id) container.querySelector(`[data-notice-id="${CSS.escape(id)}"]`)?.remove()

  const notice = document.createElement('div')
  notice.className = 'notice'
  notice.dataset.kind = kind
  if (id) notice.dataset.noticeId = id
  notice.setAttribute('role', kind === 'error' ? 'alert' : 'status')

  const text = document.createElement('p')
  text.className = 'flex-1'
  text.textContent = message
  notice.append(text)

  if (action) {
    const button = document.createElement('button')
    button.type = 'button'
    button.className = 'notice-action'
    button.textContent = action.label
    button.addEventListener('click', action.run)
    notice.append(button)
  }

  const close = document.createElement('button')
  close.type = 'button'
  close.className = 'notice-action'
  close.setAttribute('aria-label', 'Dismiss')
  close.textContent = '✕'
  notice.append(close)

  const remove = () => notice.remove()
  close.addEventListener('click', remove)
  container.append(notice)
  if (timeout !== null) setTimeout(remove, timeout)
  return remove
}
