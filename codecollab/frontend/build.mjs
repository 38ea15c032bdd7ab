// Bundles src/main.js into ../static/dist/app.js, with each language grammar in its own chunk
// under ../static/dist/chunks/. `node build.mjs --watch` rebuilds on change.
import { readdirSync, rmSync } from 'node:fs'
import path from 'node:path'

import * as esbuild from 'esbuild'

const watch = process.argv.includes('--watch')
const outdir = '../static/dist'

const options = {
  entryPoints: { app: 'src/main.js' },
  outdir,
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  target: ['es2020'],
  minify: !watch,
  sourcemap: true,
  legalComments: 'linked',
  logLevel: 'info',
  metafile: true,
}

/**
 * Deletes chunks that the latest build did not write, because chunk names carry content hashes
 * and stale ones would pile up. Deleting after the build, not before, keeps the page of a
 * running server loadable while the build runs.
 */
function removeStaleChunks(metafile) {
  const written = new Set(Object.keys(metafile.outputs).map((file) => path.resolve(file)))
  const chunkDir = path.join(outdir, 'chunks')
  for (const name of readdirSync(chunkDir)) {
    const file = path.resolve(chunkDir, name)
    if (!written.has(file)) rmSync(file)
  }
}

if (watch) {
  const context = await esbuild.context(options)
  await context.watch()
} else {
  const result = await esbuild.build(options)
  removeStaleChunks(result.metafile)
}
