// The header's live counter and avatars, rendered from the server's `presence` event.

import { initials, isSafeColor } from './identity.js'

// Avatars shown before the rest collapse into a "+N" bubble.
const MAX_AVATARS = 4

function avatar(text, title, color, extraClass) {
  const item = document.createElement('li')
  item.className = `avatar ${extraClass}`
  item.title = title
  if (color) item.style.backgroundColor = color

  const visible = document.createElement('span')
  visible.setAttribute('aria-hidden', 'true')
  visible.textContent = text
  const spoken = document.createElement('span')
  spoken.className = 'sr-only'
  spoken.textContent = title
  item.append(visible, spoken)
  return item
}

/**
 * Renders `{count, users: [{clientId, name, color}]}` into the counter and avatar list.
 * The own tab comes first and is outlined. Colours other than #rrggbb fall back to grey.
 */
export function renderPresence({ count, users }, ownClientId) {
  const list = Array.isArray(users) ? users : []
  const total = Number.isInteger(count) ? count : list.length
  document.getElementById('user-count').textContent = String(total)

  const sorted = [...list].sort((a, b) => (b.clientId === ownClientId) - (a.clientId === ownClientId))
  const container = document.getElementById('avatars')
  const items = sorted.slice(0, MAX_AVATARS).map((user) => {
    const name = String(user.name ?? 'Anonymous')
    const self = user.clientId === ownClientId
    const color = isSafeColor(user.color) ? user.color : '#64748b'
    return avatar(initials(name), self ? `${name} (you)` : name, color, self ? 'avatar-self' : '')
  })

  const hidden = sorted.length - MAX_AVATARS
  if (hidden > 0) {
    const names = sorted.slice(MAX_AVATARS).map((user) => String(user.name ?? 'Anonymous'))
    items.push(avatar(`+${hidden}`, names.join(', '), null, 'avatar-more'))
  }
  container.replaceChildren(...items)
}
