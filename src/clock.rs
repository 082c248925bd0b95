//! Wall-clock time for benchmarks and profiles, natively and in the browser. Imports nothing
//! from the crate: every layer may use it.

/// Wall-clock time: `Instant` natively, `performance.now()` in the browser (window or worker).
pub struct Stopwatch {
    #[cfg(not(target_arch = "wasm32"))]
    start: std::time::Instant,
    #[cfg(target_arch = "wasm32")]
    start_ms: f64,
}

#[cfg(target_arch = "wasm32")]
mod js_clock {
    use wasm_bindgen::prelude::wasm_bindgen;
    #[wasm_bindgen]
    extern "C" {
        /// `performance.now()`, in milliseconds; `performance` is a global in windows and workers.
        #[wasm_bindgen(js_namespace = performance, js_name = now)]
        pub fn performance_now() -> f64;
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Stopwatch {
    pub fn start() -> Self {
        Stopwatch { start: std::time::Instant::now() }
    }

    /// Seconds since [`Stopwatch::start`].
    pub fn seconds(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

#[cfg(target_arch = "wasm32")]
impl Stopwatch {
    pub fn start() -> Self {
        Stopwatch { start_ms: js_clock::performance_now() }
    }

    /// Seconds since [`Stopwatch::start`] (browsers coarsen `performance.now()` to 5-100 µs).
    pub fn seconds(&self) -> f64 {
        (js_clock::performance_now() - self.start_ms) / 1e3
    }
}
