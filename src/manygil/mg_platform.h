/*
 * manygil's platform layer: every operating-system call of the native module, behind
 * one small API with three branches (Linux, macOS, Windows), as CPython's
 * Python/condvar.h does.  No Python in it: tests/c/test_platform.c builds it alone, with
 * gcc here and with mingw-w64 for Wine (./dev platform-check).
 *
 *   mg_mutex, mg_cond   a mutex and a condition variable whose timed waits take a
 *                       deadline on the monotonic clock (mg_monotonic_ns())
 *   mg_sem              a counting semaphore (a channel's items and free places)
 *   mg_pages_*          zeroed, page-aligned memory for large blocks
 *   mg_shm_*            memory another process can map (a memfd; Linux only)
 *   mg_atomic_*, ...    64-bit atomics, overflow-checked adds, a spin-wait hint,
 *                       thread-local storage, the at-fork child hook, threads (tests)
 *
 * Branches:
 *   Linux    pthread mutex; pthread cond on CLOCK_MONOTONIC; unnamed POSIX semaphores
 *            (sem_clockwait): a hand-off is one futex wake; mmap; memfd_create.
 *   macOS    pthread mutex and cond, timed waits relative
 *            (pthread_cond_timedwait_relative_np: no condattr clock there); macOS has
 *            no unnamed POSIX semaphores, so mg_sem is a count under a mutex and a cond
 *            (MG_SEM_GENERIC; dispatch semaphores abort when freed with a count below
 *            their initial one, which a channel's "free places" may be); mmap; no memfd.
 *   Windows  SRWLOCK, CONDITION_VARIABLE (SleepConditionVariableSRW, millisecond
 *            timeouts rounded up), mg_sem as on macOS (user-mode when uncontended,
 *            where a CreateSemaphore handle costs a system call each way);
 *            VirtualAlloc; no fork, no memfd.
 *
 * Why not CPython's portable API: the module needs a condition variable with timed
 * waits that releases the mutex atomically, and CPython exposes none (PyCOND_* are
 * internal); PyThread_acquire_lock_timed is a lock with no condition variable, and
 * PyMutex (3.13+) neither exists on 3.12 nor pairs with a condition variable; and the
 * layer must be testable as plain C without an interpreter.  What the layer needs of
 * each OS is a dozen calls, the same ones CPython's condvar.h wraps.
 *
 * Hot-path operations (lock, unlock, signal, post, trywait) are static inline here, so
 * that the layer costs no call; the rest lives in mg_platform.c.
 */
#ifndef MG_PLATFORM_H
#define MG_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  define MG_WINDOWS 1
#  define MG_SEM_GENERIC 1
#  ifndef WIN32_LEAN_AND_MEAN
#    define WIN32_LEAN_AND_MEAN
#  endif
#  include <windows.h>
#elif defined(__APPLE__)
#  define MG_MACOS 1
#  define MG_SEM_GENERIC 1
#  include <pthread.h>
#else
#  define MG_LINUX 1
#  include <pthread.h>
#  if !defined(MG_SEM_GENERIC)
#    include <semaphore.h>
#  endif
#endif

/* Functions every file of the extension shares but no other library should see. */
#if defined(__GNUC__) && !defined(_WIN32)
#  define MG_HIDDEN __attribute__((visibility("hidden")))
#else
#  define MG_HIDDEN
#endif

#if defined(_MSC_VER) && !defined(__clang__)
#  define MG_THREAD_LOCAL __declspec(thread)
#else
#  define MG_THREAD_LOCAL _Thread_local
#endif

/* ------------------------------------------------------------------ time */

/* A deadline that is never reached (a wait without one). */
#define MG_NEVER INT64_MAX

/* The monotonic clock, in nanoseconds from an unspecified origin. */
MG_HIDDEN int64_t mg_monotonic_ns(void);
/* The deadline ``seconds`` from now; saturates at MG_NEVER; a NaN or a negative
 * number is now. */
MG_HIDDEN int64_t mg_deadline(double seconds);

/* ------------------------------------------------------------------ mutex, cond */

#if defined(MG_WINDOWS)
typedef SRWLOCK mg_mutex;
typedef CONDITION_VARIABLE mg_cond;
#  define MG_MUTEX_INIT SRWLOCK_INIT
static inline void mg_mutex_init(mg_mutex *m) { InitializeSRWLock(m); }
static inline void mg_mutex_destroy(mg_mutex *m) { (void)m; }
static inline void mg_mutex_lock(mg_mutex *m) { AcquireSRWLockExclusive(m); }
static inline void mg_mutex_unlock(mg_mutex *m) { ReleaseSRWLockExclusive(m); }
static inline void mg_cond_init(mg_cond *c) { InitializeConditionVariable(c); }
static inline void mg_cond_destroy(mg_cond *c) { (void)c; }
static inline void mg_cond_signal(mg_cond *c) { WakeConditionVariable(c); }
static inline void mg_cond_broadcast(mg_cond *c) { WakeAllConditionVariable(c); }
static inline void mg_cond_wait(mg_cond *c, mg_mutex *m) { SleepConditionVariableSRW(c, m, INFINITE, 0); }
#else
typedef pthread_mutex_t mg_mutex;
typedef pthread_cond_t mg_cond;
#  define MG_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
static inline void mg_mutex_init(mg_mutex *m) { pthread_mutex_init(m, NULL); }
static inline void mg_mutex_destroy(mg_mutex *m) { pthread_mutex_destroy(m); }
static inline void mg_mutex_lock(mg_mutex *m) { pthread_mutex_lock(m); }
static inline void mg_mutex_unlock(mg_mutex *m) { pthread_mutex_unlock(m); }
MG_HIDDEN void mg_cond_init(mg_cond *c);   /* on the monotonic clock where it can be */
static inline void mg_cond_destroy(mg_cond *c) { pthread_cond_destroy(c); }
static inline void mg_cond_signal(mg_cond *c) { pthread_cond_signal(c); }
static inline void mg_cond_broadcast(mg_cond *c) { pthread_cond_broadcast(c); }
static inline void mg_cond_wait(mg_cond *c, mg_mutex *m) { pthread_cond_wait(c, m); }
#endif

/* Wait on c (m held) until woken or until the monotonic ``deadline``: 0 when woken
 * (perhaps spuriously), nonzero once the deadline passed or on any error, so that a
 * caller never spins on a failing wait. */
MG_HIDDEN int mg_cond_timedwait(mg_cond *c, mg_mutex *m, int64_t deadline);

/* ------------------------------------------------------------------ semaphore */

/* The largest count a semaphore holds (Linux's SEM_VALUE_MAX, Windows' LONG_MAX). */
#define MG_SEM_VALUE_MAX 0x7fffffff

#if defined(MG_SEM_GENERIC)
typedef struct {
    mg_mutex mu;
    mg_cond cond;
    uint32_t value;
    uint32_t waiters;   /* post signals only when someone sleeps */
} mg_sem;
MG_HIDDEN int mg_sem_init(mg_sem *s, unsigned value);
MG_HIDDEN void mg_sem_destroy(mg_sem *s);
MG_HIDDEN void mg_sem_post(mg_sem *s);
static inline int
mg_sem_trywait(mg_sem *s)
{
    int got = 0;
    mg_mutex_lock(&s->mu);
    if (s->value > 0) {
        s->value--;
        got = 1;
    }
    mg_mutex_unlock(&s->mu);
    return got;
}
#else
typedef sem_t mg_sem;
static inline int mg_sem_init(mg_sem *s, unsigned value) { return sem_init(s, 0, value); }
static inline void mg_sem_destroy(mg_sem *s) { sem_destroy(s); }
static inline void mg_sem_post(mg_sem *s) { sem_post(s); }
static inline int mg_sem_trywait(mg_sem *s) { return sem_trywait(s) == 0; }
#endif
/* Take one unit, waiting until the monotonic ``deadline``: 1 when taken, 0 at the
 * deadline (or on an error). */
MG_HIDDEN int mg_sem_timedwait(mg_sem *s, int64_t deadline);

/* ------------------------------------------------------------------ memory */

/* Zeroed, page-aligned memory of ``size`` bytes (> 0), committed lazily where the OS
 * does so, or NULL.  Freed with mg_pages_free(p, size). */
MG_HIDDEN void *mg_pages_alloc(size_t size);
MG_HIDDEN void mg_pages_free(void *p, size_t size);

/* Zeroed memory another process can map (Linux: a memfd, close-on-exec, that
 * /proc/PID/fd/FD names): 0 with *mem and *fd set, or -1 where none can be made,
 * always so on macOS and Windows (the caller then makes process-private memory).
 * Freed with mg_shm_free(mem, size, fd). */
MG_HIDDEN int mg_shm_create(size_t size, void **mem, int *fd);
MG_HIDDEN void mg_shm_free(void *mem, size_t size, int fd);

/* The machine's memory and swap in bytes (Windows: its commit limit), or 0 unknown. */
MG_HIDDEN uint64_t mg_memory_and_swap(void);

/* How many CPUs this process may run on (Linux: its affinity mask), at least 1. */
MG_HIDDEN int mg_cpu_count(void);

/* ------------------------------------------------------------------ atomics, misc */

#if defined(_MSC_VER) && !defined(__clang__)
#  include <intrin.h>
static inline int64_t mg_atomic_load_i64(volatile int64_t *p) { return InterlockedCompareExchange64(p, 0, 0); }
static inline void mg_atomic_add_i64(volatile int64_t *p, int64_t v) { InterlockedExchangeAdd64(p, v); }
static inline int64_t mg_atomic_add_fetch_i64(volatile int64_t *p, int64_t v) { return InterlockedExchangeAdd64(p, v) + v; }
static inline void mg_atomic_store_i64(volatile int64_t *p, int64_t v) { InterlockedExchange64(p, v); }
static inline void mg_cpu_relax(void) { YieldProcessor(); }
#else
static inline int64_t mg_atomic_load_i64(volatile int64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void mg_atomic_add_i64(volatile int64_t *p, int64_t v) { __atomic_add_fetch(p, v, __ATOMIC_RELEASE); }
static inline int64_t mg_atomic_add_fetch_i64(volatile int64_t *p, int64_t v) { return __atomic_add_fetch(p, v, __ATOMIC_ACQ_REL); }
static inline void mg_atomic_store_i64(volatile int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void
mg_cpu_relax(void)
{
#  if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#  elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#  endif
}
#endif

/* a + b into *out: 0, or 1 (and *out untouched) when it leaves int64's range. */
static inline int
mg_add_overflow_i64(int64_t a, int64_t b, int64_t *out)
{
    if ((b > 0 && a > INT64_MAX - b) || (b < 0 && a < INT64_MIN - b)) {
        return 1;
    }
    *out = a + b;
    return 0;
}

/* Run child() in the child of every fork() from now on, inside fork() and before
 * anything else of the child (pthread_atfork); once per process, whatever the number
 * of calls.  Nothing on Windows, which has no fork. */
MG_HIDDEN void mg_atfork_child_once(void (*child)(void));
/* Write msg to stderr and end the process at once, with status 1, running nothing
 * (no atexit, no buffers flushed): async-signal-safe, for the at-fork child. */
MG_HIDDEN void mg_exit_now(const char *msg, size_t len);

/* Threads, for the layer's own tests (the module's threads are Python's). */
#if defined(MG_WINDOWS)
typedef HANDLE mg_thread;
#else
typedef pthread_t mg_thread;
#endif
MG_HIDDEN int mg_thread_start(mg_thread *t, void (*fn)(void *), void *arg);
MG_HIDDEN void mg_thread_join(mg_thread t);
/* Let another thread that is ready run on this CPU, if one waits for it. */
MG_HIDDEN void mg_thread_yield(void);

#endif
