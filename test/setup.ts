// Outside the Functions host, @azure/functions warns once per registration that it runs in test
// mode. That is expected here: tests call the handlers directly.
const warn = console.warn.bind(console);
console.warn = (...args: unknown[]) => {
  const text = String(args[0] ?? '');
  if (/test mode|Failed to detect the Azure Functions runtime/.test(text)) return;
  warn(...args);
};
