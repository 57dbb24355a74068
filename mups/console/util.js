// Small DOM and formatting helpers. Text always goes in through textContent, never
// innerHTML: bank names, reasons and audit messages are data, not markup.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'checked' || key === 'disabled' || key === 'value') node[key] = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

export function show(node, visible) {
  node.classList.toggle('hidden', !visible);
}

export function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// "0.4 s", "12 s", "3 min", "2 h"; "—" when unknown.
export function ago(secs) {
  if (secs === null || secs === undefined) return '—';
  if (secs < 10) return `${secs.toFixed(1)} s`;
  if (secs < 120) return `${Math.round(secs)} s`;
  if (secs < 7200) return `${Math.round(secs / 60)} min`;
  return `${Math.round(secs / 3600)} h`;
}

export function duration(secs) {
  if (secs === null || secs === undefined) return '—';
  return ago(secs);
}

export function time(value) {
  if (value === null || value === undefined) return '—';
  const d = typeof value === 'number' ? new Date(value) : new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toLocaleString();
}

export function badge(text, kind) {
  return el('span', { class: `badge ${kind}`, text });
}

export function number(n, digits = 0) {
  if (n === null || n === undefined) return '—';
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
}
