// Bundles src/main.js into ../static/dist/app.js, with each language grammar in its own chunk
// under ../static/dist/chunks/. `node build.mjs --watch` rebuilds on change.
import * as esbuild from 'esbuild'

const watch = process.argv.includes('--watch')

const options = {
  entryPoints: { app: 'src/main.js' },
  outdir: '../static/dist',
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
