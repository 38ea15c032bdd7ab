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
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'

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
 * The editor starts read-only and without a language. The caller makes it editable once the
 * document has synced, and sets the language from the shared document.
 */
export function createEditor({ parent, ytext, awareness, undoManager, dark }) {
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
