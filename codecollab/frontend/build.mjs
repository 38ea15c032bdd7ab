// Bundles src/main.js into ../static/dist/app.js, with each language grammar in its own chunk
// under ../static/dist/chunks/. `node build.mjs --watch` rebuilds on change.
import { rmSync } from 'node:fs'

import * as esbuild from 'esbuild'

const watch = process.argv.includes('--watch')
const outdir = '../static/dist'

// Chunk names carry content hashes, so stale chunks of earlier builds would pile up.
rmSync(outdir, { recursive: true, force: true })

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
}

if (watch) {
  const context = await esbuild.context(options)
  await context.watch()
} else {
  await esbuild.build(options)
}
