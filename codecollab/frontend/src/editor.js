// CodeMirror 6 editor bound to the shared Y.Text, with swappable language, theme and
// read-only state. History comes from Y.UndoManager, so undo and redo touch only local edits.

import { autocompletion, closeBrackets, closeBracketsKeymap, completionKeymap } from '@codemirror/autocomplete'
import { defaultKeymap, indentWithTab } from '@codemirror/commands'
import {
  bracketMatching,
  defaultHighlightStyle,
  foldGutter,
  foldKeymap,
  indentOnInput,
  syntaxHighlighting,
} from '@codemirror/language'
import { highlightSelectionMatches, searchKeymap } from '@codemirror/search'
import { Compartment, EditorState } from '@codemirror/state'
import { oneDark } from '@codemirror/theme-one-dark'
import {
  crosshairCursor,
  drawSelection,
  dropCursor,
  EditorView,
  highlightActiveLine,
  highlightActiveLineGutter,
  highlightSpecialChars,
  keymap,
  lineNumbers,
  rectangularSelection,
} from '@codemirror/view'
import { yCollab, ySyncAnnotation, yUndoManagerKeymap } from 'y-codemirror.next'

// Room for the sync message header and the Yjs update structure around the inserted text.
const MESSAGE_OVERHEAD_BYTES = 1024

const utf8 = new TextEncoder()

/** Returns the UTF-8 size of the text a transaction inserts. */
function insertedBytes(transaction) {
  let bytes = 0
  transaction.changes.iterChanges((_fromA, _toA, _fromB, _toB, inserted) => {
    for (const line of inserted.iterLines()) bytes += utf8.encode(line).length + 1
  })
  return bytes
}

/**
 * Returns a filter that blocks a local change too large for one Socket.IO message, because
 * Engine.IO closes the connection on such a message instead of letting the server reject it.
 * `maxMessageBytes()` returns the limit, or null while it is unknown.
 */
function messageSizeGuard(maxMessageBytes, onBlocked) {
  return EditorState.transactionFilter.of((transaction) => {
    if (!transaction.docChanged || transaction.annotation(ySyncAnnotation)) return transaction
    const limit = maxMessageBytes()
    // Each UTF-16 unit is at most 3 UTF-8 bytes, so changes to a small document skip the count.
    if (!limit || transaction.changes.newLength * 3 < limit - MESSAGE_OVERHEAD_BYTES) return transaction
    const bytes = insertedBytes(transaction)
    if (bytes <= limit - MESSAGE_OVERHEAD_BYTES) return transaction
    onBlocked(bytes, limit)
    return []
  })
}

const baseTheme = EditorView.theme({
  '&': { height: '100%', fontSize: '14px' },
  '.cm-scroller': {
    fontFamily: 'ui-monospace, SFMono-Regular, "JetBrains Mono", Menlo, Consolas, monospace',
    lineHeight: '1.6',
  },
  '.cm-content': { paddingBottom: '40vh' },
  '.cm-ySelectionInfo': { fontFamily: 'ui-sans-serif, system-ui, sans-serif', borderRadius: '3px 3px 3px 0', padding: '1px 4px' },
})

const lightTheme = [
  EditorView.theme({
    '&': { backgroundColor: '#ffffff', color: '#1f2937' },
    '.cm-gutters': { backgroundColor: '#f8fafc', color: '#94a3b8', borderRight: '1px solid #e2e8f0' },
    '.cm-activeLine': { backgroundColor: '#f1f5f980' },
    '.cm-activeLineGutter': { backgroundColor: '#e2e8f0', color: '#334155' },
  }),
  syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
]

// The override comes first because earlier extensions take precedence in CodeMirror.
const darkTheme = [
  EditorView.theme(
    {
      '&': { backgroundColor: '#020617' },
      '.cm-gutters': { backgroundColor: '#0f172a', borderRight: '1px solid #1e293b' },
      '.cm-activeLine': { backgroundColor: '#1e293b80' },
    },
    { dark: true },
  ),
  oneDark,
]

/**
 * Creates the editor in `parent` and returns `{view, setLanguage, setDark, setEditable}`.
 * A local change larger than `maxMessageBytes()` is dropped and reported to `onTooLarge(bytes, limit)`.
 * The editor starts read-only and without a language. The caller makes it editable once the
 * document has synced, and sets the language from the shared document.
 */
export function createEditor({ parent, ytext, awareness, undoManager, dark, maxMessageBytes, onTooLarge }) {
  const languageSlot = new Compartment()
  const themeSlot = new Compartment()
  const editableSlot = new Compartment()
  const readOnly = [EditorState.readOnly.of(true), EditorView.editable.of(false)]

  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: ytext.toString(),
      extensions: [
        lineNumbers(),
        highlightActiveLineGutter(),
        highlightSpecialChars(),
        foldGutter(),
        drawSelection(),
        dropCursor(),
        EditorState.allowMultipleSelections.of(true),
        indentOnInput(),
        bracketMatching(),
        closeBrackets(),
        autocompletion({ activateOnTyping: false }),
        rectangularSelection(),
        crosshairCursor(),
        highlightActiveLine(),
        highlightSelectionMatches(),
        EditorView.lineWrapping,
        EditorView.contentAttributes.of({ 'aria-label': 'Code editor' }),
        keymap.of([
          ...closeBracketsKeymap,
          ...yUndoManagerKeymap,
          ...defaultKeymap,
          ...searchKeymap,
          ...foldKeymap,
          ...completionKeymap,
          indentWithTab,
        ]),
        messageSizeGuard(maxMessageBytes, onTooLarge),
        yCollab(ytext, awareness, { undoManager }),
        baseTheme,
        languageSlot.of([]),
        themeSlot.of(dark ? darkTheme : lightTheme),
        editableSlot.of(readOnly),
      ],
    }),
  })

  let languageRequest = 0

  return {
    view,
    /** Loads the language's grammar and applies it unless a later call overtook this one. */
    async setLanguage(next) {
      const request = ++languageRequest
      const support = await next.load()
      if (request === languageRequest) view.dispatch({ effects: languageSlot.reconfigure(support) })
    },
    setDark(isDark) {
      view.dispatch({ effects: themeSlot.reconfigure(isDark ? darkTheme : lightTheme) })
    },
    setEditable(editable) {
      view.dispatch({ effects: editableSlot.reconfigure(editable ? [] : readOnly) })
    },
  }
}
