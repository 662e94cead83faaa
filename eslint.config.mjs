import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', 'bench-out/**', 'jest.config.js'] },
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
  {
    files: ['shared/**/*.ts'],
    rules: {
      // The core is free of the Functions runtime and of the environment: both come in from functions/.
      'no-restricted-imports': ['error', { paths: [{ name: '@azure/functions', message: 'shared/ must not depend on @azure/functions' }] }],
      'no-restricted-properties': ['error', { object: 'process', property: 'env', message: 'read settings in functions/ or local/, pass them in' }],
    },
  },
);
