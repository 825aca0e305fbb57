//! Added latency and jitter on a link, without `tc netem` (the kernel this
//! was built on has none, `CONFIG_NET_SCH_NETEM` unset, but it has
//! NFQUEUE): the receiving host's iptables hands the packets of one source
//! to a netfilter queue, and a thread of this process, inside that host's
//! namespace, holds each packet for the delay ± a uniform jitter before it
//! lets it through. Packets held with different jitters may overtake each
//! other, as with netem.
//!
//! The queue fails open: if the thread is gone or the queue is full, packets
//! pass undelayed rather than vanish, so a delay never turns into a cut.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering as Atomic};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use nfq::{Message, Queue, Verdict};

/// The longest a packet waits past its time: the thread's idle sleep.
const TICK: Duration = Duration::from_millis(1);
/// Packets the kernel holds for one queue (its default is 1024).
const QUEUE_LEN: u32 = 16_384;

/// How long each packet of a direction is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delay {
    pub mean: Duration,
    /// Each packet's delay is drawn uniformly from mean ± jitter.
    pub jitter: Duration,
}

impl Delay {
    fn draw(&self) -> Duration {
        let jitter = self.jitter.min(self.mean);
        let spread = 2 * jitter.as_micros() as u64;
        let offset = Duration::from_micros(fastrand::u64(0..=spread));
        self.mean - jitter + offset
    }
}

/// One delayed direction: the thread serving its queue. Dropping it lets
/// every packet still held through at once.
pub struct DelayedQueue {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DelayedQueue {
    /// Serves queue `num` in the namespace `netns`; returns once the queue
    /// is bound, so that rules sending packets to it may be added.
    pub fn start(netns: &str, num: u16, delay: Delay) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, bound) = mpsc::channel();
        let path = format!("/run/netns/{netns}");
        let thread = std::thread::Builder::new()
            .name(format!("delay-{num}"))
            .spawn({
                let stop = stop.clone();
                move || match open(&path, num) {
                    Ok(queue) => {
                        let _ = ready.send(Ok(()));
                        serve(queue, delay, &stop);
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            })
            .context("starting a delay thread")?;
        let queue = DelayedQueue {
            stop,
            thread: Some(thread),
        };
        bound
            .recv()
            .map_err(|_| anyhow!("the delay thread ended before binding"))?
            .with_context(|| format!("netfilter queue {num} in {netns}"))?;
        Ok(queue)
    }
}

impl Drop for DelayedQueue {
    fn drop(&mut self) {
        self.stop.store(true, Atomic::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Enters the namespace (this thread only) and binds the queue there: a
/// netlink socket belongs to the namespace it was made in.
fn open(netns_path: &str, num: u16) -> anyhow::Result<Queue> {
    let ns = File::open(netns_path).with_context(|| format!("opening {netns_path}"))?;
    // SAFETY: setns on a valid namespace fd only changes this thread's
    // network namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("entering the namespace");
    }
    let mut queue = Queue::open().context("opening a netfilter queue socket")?;
    queue.bind(num).context("binding the queue")?;
    // Only the verdict matters: copy no payload to this process.
    queue.set_copy_range(num, 0)?;
    queue.set_fail_open(num, true)?;
    queue.set_queue_max_len(num, QUEUE_LEN)?;
    queue.set_nonblocking(true);
    Ok(queue)
}

/// A packet held until `due`; `seq` keeps equal times in arrival order.
struct Held {
    due: Instant,
    seq: u64,
    msg: Message,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

fn serve(mut queue: Queue, delay: Delay, stop: &AtomicBool) {
    let mut held: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
    let mut seq = 0u64;
    while !stop.load(Atomic::Relaxed) {
        // Take every packet waiting, then release the ones due.
        while let Ok(msg) = queue.recv() {
            seq += 1;
            held.push(Reverse(Held {
                due: Instant::now() + delay.draw(),
                seq,
                msg,
            }));
        }
        let now = Instant::now();
        while held.peek().is_some_and(|Reverse(h)| h.due <= now) {
            if let Some(Reverse(h)) = held.pop() {
                accept(&mut queue, h.msg);
            }
        }
        let next = held
            .peek()
            .map_or(TICK, |Reverse(h)| h.due.saturating_duration_since(now));
        std::thread::sleep(next.min(TICK));
    }
    for Reverse(h) in held {
        accept(&mut queue, h.msg);
    }
}

fn accept(queue: &mut Queue, mut msg: Message) {
    msg.set_verdict(Verdict::Accept);
    // A verdict for a packet the kernel no longer holds (its queue was
    // flushed) fails harmlessly.
    let _ = queue.verdict(msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_is_drawn_within_its_jitter() {
        let delay = Delay {
            mean: Duration::from_millis(50),
            jitter: Duration::from_millis(10),
        };
        let drawn: Vec<Duration> = (0..1000).map(|_| delay.draw()).collect();
        assert!(drawn.iter().all(|d| *d >= Duration::from_millis(40)));
        assert!(drawn.iter().all(|d| *d <= Duration::from_millis(60)));
        // Spread over the range, not one value.
        assert!(drawn.iter().any(|d| *d < Duration::from_millis(45)));
        assert!(drawn.iter().any(|d| *d > Duration::from_millis(55)));
    }

    #[test]
    fn a_jitter_larger_than_the_delay_never_goes_below_zero() {
        let delay = Delay {
            mean: Duration::from_millis(5),
            jitter: Duration::from_millis(50),
        };
        assert!((0..1000).all(|_| delay.draw() <= Duration::from_millis(10)));
    }
}
