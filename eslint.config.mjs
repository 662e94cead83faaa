import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { createNodeResolver, importX } from 'eslint-plugin-import-x';
import globals from 'globals';

/**
 * The layers of shared/, lowest first (docs/architecture in README "How it works"): a folder
 * imports only from layers below its own — never up, never sideways within its layer — so each
 * can be read and tested with only what is under it. The root files (errors, log, telemetry,
 * clock, Braze's API facts) are the ground everything stands on.
 */
const layers = [
  // plumbing
  ['config'],
  ['storage'],
  ['queue'],
  // domain: Customer Insights exports, rows to users, Braze's client
  ['ci'],
  ['mapping'],
  ['braze'],
  // records: runs, units, batches, locks and pointers; the delivered state
  ['runs'],
  ['state'],
  // steps: a batch's life; reading a refresh; reconciling (which reads with the reader)
  ['batches', 'reader'],
  ['reconcile'],
  // the run: its phases and their runner
  ['sync'],
];
const folders = layers.flat();
const layeringZones = [
  ...layers.flatMap((layer, i) =>
    layer.map((folder) => ({
      target: `./shared/${folder}`,
      from: [
        ...layers
          .slice(i)
          .flat()
          .filter((other) => other !== folder)
          .map((other) => `./shared/${other}`),
        './functions',
        './local',
        './bench',
      ],
      message: `shared/${folder} stands on the layers below it only: ${layers.slice(0, i).flat().join(', ')} and the root files`,
    })),
  ),
  { target: './shared/*.ts', from: folders.map((folder) => `./shared/${folder}`), message: 'the root files of shared/ are the ground: they import no folder' },
];

export default tseslint.config(
  { ignores: ['dist/**', '.local/**', 'node_modules/**', 'coverage/**', 'bench-out/**', 'jest.config.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }],
      'no-console': ['error', { allow: ['log', 'warn', 'error'] }],
    },
  },
  // Scripts run by npm and azd hooks: plain Node ESM.
  { files: ['**/*.mjs'], languageOptions: { globals: globals.node } },
  {
    files: ['shared/**/*.ts'],
    plugins: { 'import-x': importX },
    settings: { 'import-x/resolver-next': [createNodeResolver({ extensions: ['.ts', '.js'] })] },
    rules: {
      'import-x/no-restricted-paths': ['error', { zones: layeringZones }],
      // The core is free of the Functions runtime and of the environment: both come in from functions/.
      'no-restricted-imports': ['error', { paths: [{ name: '@azure/functions', message: 'shared/ must not depend on @azure/functions' }] }],
      'no-restricted-properties': ['error', { object: 'process', property: 'env', message: 'read settings in functions/ or local/, pass them in' }],
    },
  },
);
