// The one async iterator behind every streamed result (engine.js on its own thread, the worker
// proxy in index.js): a producer pushes values and ends it (with an error or not); the consumer
// reads them with `for await`. Leaving the loop early calls `onReturn` (which aborts the
// request) and ends the iteration.

/**
 * `{ iterator, push(value), end(error?) }`. Values pushed after the consumer has left are
 * dropped; an error given to `end` is thrown by the `next()` that reaches it.
 */
export function pushStream(onReturn) {
  const items = [];
  let wake = null;
  let ended = false;
  let left = false;
  let failure = null;
  const kick = () => {
    if (wake) { const w = wake; wake = null; w(); }
  };
  const iterator = {
    [Symbol.asyncIterator]() { return this; },
    async next() {
      for (;;) {
        if (left) return { value: undefined, done: true };
        if (items.length) return { value: items.shift(), done: false };
        if (ended) {
          if (failure) { const f = failure; failure = null; left = true; throw f; }
          return { value: undefined, done: true };
        }
        await new Promise((resolve) => { wake = resolve; });
      }
    },
    async return() {
      if (!left && !ended) { try { onReturn?.(); } catch { /* the stream ends either way */ } }
      left = true;
      items.length = 0;
      kick();
      return { value: undefined, done: true };
    },
  };
  return {
    iterator,
    push(value) {
      if (left || ended) return;
      items.push(value);
      kick();
    },
    end(error) {
      if (ended) return;
      ended = true;
      if (error) failure = error;
      kick();
    },
  };
}
