/**
 * Outside the Functions host, @azure/functions runs in "test mode" and warns once per registered
 * function. The local runner and tests call the handlers directly on purpose, so those lines are
 * noise; every other warning passes through. Import this before any function file.
 */
const warn = console.warn.bind(console);
console.warn = (...args: unknown[]) => {
  const text = String(args[0] ?? '');
  if (/package is in test mode|Failed to detect the Azure Functions runtime/.test(text)) return;
  warn(...args);
};
