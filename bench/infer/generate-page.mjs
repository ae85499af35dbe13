// Runs measureGenerate() in the page and hands the result to the driver as window.__bench (a promise).
import { measureGenerate } from './generate.mjs';

const q = new URLSearchParams(location.search);
window.__bench = (async () => {
  const response = await fetch(q.get('file'));
  if (!response.ok) throw new Error(`cannot fetch the model ${q.get('file')}: HTTP ${response.status}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  const promptIds = JSON.parse(q.get('prompts'));
  return measureGenerate({ engine: q.get('engine'), url: q.get('entry'), bytes, promptIds, prompts: JSON.parse(q.get('use')), latePrompt: q.get('late'), window: Number(q.get('window') ?? 16), budgetMs: Number(q.get('budget') ?? 3000) });
})();
