// Languages offered by the selector. The id is what `meta.language` stores in the shared
// document, so ids must never change once released.

/**
 * One selectable language: `label` for the UI, `extension` for downloaded files, `mime` for the
 * download's Blob, and `load()` resolving to the CodeMirror extension. Each grammar is a
 * separate chunk that the browser fetches from this server the first time it is chosen.
 */
export const LANGUAGES = [
  { id: 'plaintext', label: 'Plain text', extension: 'txt', mime: 'text/plain', load: async () => [] },
  { id: 'python', label: 'Python', extension: 'py', mime: 'text/x-python', load: () => import('@codemirror/lang-python').then((m) => m.python()) },
  { id: 'javascript', label: 'JavaScript', extension: 'js', mime: 'text/javascript', load: () => import('@codemirror/lang-javascript').then((m) => m.javascript({ jsx: true })) },
  { id: 'typescript', label: 'TypeScript', extension: 'ts', mime: 'text/typescript', load: () => import('@codemirror/lang-javascript').then((m) => m.javascript({ jsx: true, typescript: true })) },
  { id: 'html', label: 'HTML', extension: 'html', mime: 'text/html', load: () => import('@codemirror/lang-html').then((m) => m.html()) },
  { id: 'css', label: 'CSS', extension: 'css', mime: 'text/css', load: () => import('@codemirror/lang-css').then((m) => m.css()) },
  { id: 'json', label: 'JSON', extension: 'json', mime: 'application/json', load: () => import('@codemirror/lang-json').then((m) => m.json()) },
  { id: 'markdown', label: 'Markdown', extension: 'md', mime: 'text/markdown', load: () => import('@codemirror/lang-markdown').then((m) => m.markdown()) },
  { id: 'sql', label: 'SQL', extension: 'sql', mime: 'application/sql', load: () => import('@codemirror/lang-sql').then((m) => m.sql()) },
  { id: 'go', label: 'Go', extension: 'go', mime: 'text/x-go', load: () => import('@codemirror/lang-go').then((m) => m.go()) },
  { id: 'rust', label: 'Rust', extension: 'rs', mime: 'text/x-rust', load: () => import('@codemirror/lang-rust').then((m) => m.rust()) },
  { id: 'java', label: 'Java', extension: 'java', mime: 'text/x-java', load: () => import('@codemirror/lang-java').then((m) => m.java()) },
  { id: 'cpp', label: 'C / C++', extension: 'cpp', mime: 'text/x-c++src', load: () => import('@codemirror/lang-cpp').then((m) => m.cpp()) },
  { id: 'yaml', label: 'YAML', extension: 'yaml', mime: 'application/yaml', load: () => import('@codemirror/lang-yaml').then((m) => m.yaml()) },
  { id: 'xml', label: 'XML', extension: 'xml', mime: 'application/xml', load: () => import('@codemirror/lang-xml').then((m) => m.xml()) },
]

/** Language shown while the shared document names none. */
export const DEFAULT_LANGUAGE_ID = 'python'

const byId = new Map(LANGUAGES.map((language) => [language.id, language]))

/** Returns the language with this id, or the default one for a missing or unknown id. */
export function languageById(id) {
  return byId.get(id) ?? byId.get(DEFAULT_LANGUAGE_ID)
}
