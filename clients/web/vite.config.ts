import { defineConfig } from 'vite';

// The build output (dist/) is committed and embedded in the umbra binary; CI checks that
// a fresh `npm run build` reproduces it byte for byte, so nothing here may depend on the
// time, the machine or the path of the checkout.
export default defineConfig({
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    // Browsers that run ES2022 modules have modulepreload; no polyfill in the bundle.
    modulePreload: { polyfill: false },
    // Every asset a file of its own, so the Content-Security-Policy needs no data: URLs
    // for scripts or workers.
    assetsInlineLimit: 0,
  },
  worker: {
    format: 'es',
  },
  resolve: {
    // The only Node module the SDK's dependencies name: see src/no-node-crypto.ts.
    alias: [{ find: /^crypto$/, replacement: '/src/no-node-crypto.ts' }],
  },
  server: {
    // `npm run dev` serves the sources with live reload and sends the API to a running
    // `umbra dev` on its default address.
    proxy: {
      '/v1': 'http://127.0.0.1:8080',
      '/dev': 'http://127.0.0.1:8080',
    },
  },
});
