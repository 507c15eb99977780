//! Thread priority: the one place trellis asks the kernel to weigh its threads differently.
//!
//! Why: on a machine with few cores every thread competes with the trading threads for a core. The
//! scheduler cannot know that a tick → order decision matters more than a dashboard's JSON or a training
//! epoch, so the threads that must yield say so themselves by raising their niceness (Linux's CFS then gives
//! a nice-5 thread about a third of a nice-0 thread's share, a nice-19 thread about 1.5 %). An unprivileged
//! process can only lower a priority, never raise it back, so a thread reniced here keeps its niceness
//! for life: call it only on threads dedicated to the lower-priority work (training and optimisation
//! threads, the API server's workers).

/// Sets the calling thread's niceness to `nice` (0 = normal … 19 = lowest; Linux; elsewhere nothing).
/// Answers whether the kernel accepted it (it refuses to lower a niceness without privilege).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // the crate's one exception (lib.rs): two system calls, see SAFETY below
pub fn set_this_threads_nice(nice: i32) -> bool {
    let nice = nice.clamp(0, 19);
    // SAFETY: gettid and setpriority take no pointers; on Linux a thread id names one thread for
    // PRIO_PROCESS, so only this thread is reniced.
    let r = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice)
    };
    r == 0
}

#[cfg(not(target_os = "linux"))]
pub fn set_this_threads_nice(_nice: i32) -> bool {
    true
}

/// Moves the calling thread to Linux's `SCHED_IDLE` class: it runs only on a core no normal thread wants,
/// and a normal thread that wakes takes the core from it at once. Niceness alone is not enough for work that
/// keeps a core busy (training, optimisation): a nice-19 thread still finishes its time slice before a woken
/// trading thread runs, which `trellis bench beside` saw as a doubled tick → order p99 beside an
/// optimisation. Answers whether the kernel accepted it (Linux; elsewhere nothing).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // the crate's one exception (lib.rs), see SAFETY below
pub fn make_this_thread_idle() -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param that outlives the call, which only reads it; pid 0 names the
    // calling thread, so only this thread changes class.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    r == 0
}

#[cfg(not(target_os = "linux"))]
pub fn make_this_thread_idle() -> bool {
    true
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// This thread's niceness as the kernel reports it (`/proc/thread-self/stat`, field 19).
    fn niceness() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        after
            .split(' ')
            .nth(16)
            .expect("nice")
            .parse()
            .expect("number")
    }

    /// This thread's scheduling policy as the kernel reports it (`/proc/thread-self/sched`, `policy`).
    fn policy() -> i32 {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").expect("sched");
        sched
            .lines()
            .find(|l| l.starts_with("policy"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse().ok())
            .expect("policy")
    }

    #[test]
    fn an_idle_thread_is_in_the_idle_class_and_other_threads_keep_theirs() {
        let before = policy();
        let seen = std::thread::spawn(|| {
            assert!(super::make_this_thread_idle());
            policy()
        })
        .join()
        .expect("thread");
        assert_eq!(seen, libc::SCHED_IDLE);
        assert_eq!(policy(), before, "only that thread changes class");
    }

    #[test]
    fn a_reniced_thread_reports_its_new_niceness_and_other_threads_keep_theirs() {
        let before = niceness();
        let seen = std::thread::spawn(|| {
            assert!(super::set_this_threads_nice(7));
            niceness()
        })
        .join()
        .expect("thread");
        assert_eq!(seen, 7.max(before));
        assert_eq!(niceness(), before, "only the reniced thread changes");
    }
}
