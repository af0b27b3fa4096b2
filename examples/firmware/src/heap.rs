//! The heap, and (with the `measure` feature) its peak and the stack's high-water mark,
//! reported over semihosting.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};

use embedded_alloc::LlffHeap;

/// The allocator, counting bytes in use and their peak.
struct Counting {
    heap: LlffHeap,
    used: AtomicUsize,
    peak: AtomicUsize,
}

#[global_allocator]
static HEAP: Counting = Counting {
    heap: LlffHeap::empty(),
    used: AtomicUsize::new(0),
    peak: AtomicUsize::new(0),
};

// SAFETY: forwards to LlffHeap, which is a GlobalAlloc; the counters are only statistics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = self.heap.alloc(layout);
        if !p.is_null() {
            let now = self.used.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.used.fetch_sub(layout.size(), Ordering::Relaxed);
        self.heap.dealloc(ptr, layout);
    }
}

/// Hands `size` bytes at `start` to the allocator.
///
/// # Safety
/// Once, before any allocation, with memory used by nothing else.
pub unsafe fn init(start: usize, size: usize) {
    HEAP.heap.init(start, size);
}

#[cfg(feature = "measure")]
const PAINT: u32 = 0xa5a5_a5a5;

#[cfg(feature = "measure")]
extern "C" {
    /// First address after `.bss` and `.data` (cortex-m-rt's linker script).
    static mut __sheap: u32;
    /// Top of the stack (cortex-m-rt's linker script).
    static _stack_start: u32;
}

/// Fills the free stack below the current frame with a pattern, to find the high-water mark.
#[cfg(feature = "measure")]
#[inline(never)]
pub fn paint_stack() {
    let sp = cortex_m::register::msp::read() as usize - 256;
    // SAFETY: the words between the end of .bss and 256 bytes below the stack pointer are
    // free stack (nothing lives there yet); written with volatile stores, word by word.
    unsafe {
        let mut p = core::ptr::addr_of_mut!(__sheap) as usize;
        while p < sp {
            core::ptr::write_volatile(p as *mut u32, PAINT);
            p += 4;
        }
    }
}

#[cfg(not(feature = "measure"))]
pub fn paint_stack() {}

/// Prints the outcome, the heap peak and the stack high-water mark, then ends the qemu run.
#[cfg(feature = "measure")]
pub fn report(result: Result<usize, &'static str>) {
    use cortex_m_semihosting::{debug, hprintln};
    // Addresses only (taking them reads nothing); the words are read back below.
    let (bottom, top) = (
        core::ptr::addr_of!(__sheap) as usize,
        core::ptr::addr_of!(_stack_start) as usize,
    );
    let mut lowest = top;
    let mut p = bottom;
    while p < top {
        // SAFETY: inside RAM, between the end of .bss and the top of the stack.
        if unsafe { core::ptr::read_volatile(p as *const u32) } != PAINT {
            lowest = p;
            break;
        }
        p += 4;
    }
    hprintln!(
        "device path: {:?}; heap peak {} bytes; stack high-water {} bytes",
        result,
        HEAP.peak.load(Ordering::Relaxed),
        top - lowest
    );
    debug::exit(if result.is_ok() {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
}

/// Without semihosting the result is kept where a debugger can read it.
#[cfg(not(feature = "measure"))]
pub fn report(result: Result<usize, &'static str>) {
    let _ = core::hint::black_box(result);
}
