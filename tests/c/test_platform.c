/*
 * Unit tests of manygil's platform layer (src/manygil/mg_platform.h), as plain C with
 * no Python: timed waits, wake-ups from another thread, many waiters, timeouts near
 * zero, semaphores, page allocation, shared memory, atomics.  ./dev platform-check
 * builds and runs it with gcc here (also with -DMG_SEM_GENERIC: the semaphore of
 * macOS and Windows), and cross-compiled with mingw-w64 under Wine.
 *
 * Prints one "ok"/"not ok" line per check (TAP) and exits 1 if any failed.  Bounds on
 * how late a wait may end are loose (a loaded machine, Wine): a test fails on a wait
 * that ends early, never wakes, or wakes far too late.
 */
#include "mg_platform.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int checks = 0, failures = 0;

static void
check(int ok, const char *what)
{
    checks++;
    if (!ok) {
        failures++;
    }
    printf("%s %d - %s\n", ok ? "ok" : "not ok", checks, what);
    fflush(stdout);
}

#define MS 1000000LL
#define LATE (3000 * MS)   /* how late a wait may end and still pass (Wine, a busy machine) */

/* Sleep about ``ms`` milliseconds with the layer alone (a cond nobody signals). */
static void
sleep_ms(int64_t ms)
{
    mg_mutex m;
    mg_cond c;
    mg_mutex_init(&m);
    mg_cond_init(&c);
    int64_t until = mg_monotonic_ns() + ms * MS;
    mg_mutex_lock(&m);
    while (mg_monotonic_ns() < until) {
        mg_cond_timedwait(&c, &m, until);
    }
    mg_mutex_unlock(&m);
    mg_cond_destroy(&c);
    mg_mutex_destroy(&m);
}

/* ------------------------------------------------------------------ time */

static void
test_clock(void)
{
    int64_t a = mg_monotonic_ns();
    int64_t b = mg_monotonic_ns();
    check(a > 0 && b >= a, "the monotonic clock does not go back");
    int64_t d = mg_deadline(0.0);
    check(d >= b && d - b < LATE, "mg_deadline(0) is now");
    check(mg_deadline(-5.0) <= mg_monotonic_ns(), "mg_deadline(negative) is now");
    check(mg_deadline(NAN) <= mg_monotonic_ns(), "mg_deadline(NaN) is now");
    check(mg_deadline(1e300) == MG_NEVER, "mg_deadline(1e300) saturates at MG_NEVER");
    check(mg_deadline(9223372036.0) == MG_NEVER || mg_deadline(9223372036.0) > 0,
          "mg_deadline(threading.TIMEOUT_MAX) does not overflow");
    int64_t t0 = mg_monotonic_ns();
    int64_t one = mg_deadline(0.25);
    check(one - t0 >= 250 * MS && one - t0 < 250 * MS + LATE, "mg_deadline(0.25) is 250 ms away");
}

/* ------------------------------------------------------------------ cond */

static void
test_cond_timeout(void)
{
    mg_mutex m;
    mg_cond c;
    mg_mutex_init(&m);
    mg_cond_init(&c);
    mg_mutex_lock(&m);
    int64_t start = mg_monotonic_ns();
    int64_t deadline = start + 100 * MS;
    int rc = 0;
    while (rc == 0) {   /* a spurious wake-up may end a wait early: wait again */
        rc = mg_cond_timedwait(&c, &m, deadline);
    }
    int64_t end = mg_monotonic_ns();
    mg_mutex_unlock(&m);
    check(end >= deadline, "a timed wait ends at its deadline, not before");
    check(end - deadline < LATE, "a timed wait ends soon after its deadline");

    /* deadlines near zero: now, in the past, one microsecond away, 0, MG_NEVER - no */
    int64_t deadlines[] = {mg_monotonic_ns(), mg_monotonic_ns() - 1000 * MS,
                           mg_monotonic_ns() + 1000, 0, INT64_MIN + 1};
    int all = 1;
    mg_mutex_lock(&m);
    for (size_t i = 0; i < sizeof(deadlines) / sizeof(deadlines[0]); i++) {
        int64_t t = mg_monotonic_ns();
        int r = 0;
        while (r == 0) {
            r = mg_cond_timedwait(&c, &m, deadlines[i]);
        }
        all &= mg_monotonic_ns() - t < LATE;
    }
    mg_mutex_unlock(&m);
    check(all, "timed waits on deadlines now, past, 1 us away, 0 and INT64_MIN return at once");
    mg_cond_destroy(&c);
    mg_mutex_destroy(&m);
}

typedef struct {
    mg_mutex m;
    mg_cond c;
    int flag;
    int64_t woke_at;
    int generation;
    int awake;       /* waiters that saw the new generation */
    int waiting;     /* waiters inside the wait */
} shared_t;

static void
set_flag_later(void *p)
{
    shared_t *s = p;
    sleep_ms(30);
    mg_mutex_lock(&s->m);
    s->flag = 1;
    mg_mutex_unlock(&s->m);
    mg_cond_signal(&s->c);
}

static void
test_cond_wakeup(void)
{
    shared_t s;
    memset(&s, 0, sizeof(s));
    mg_mutex_init(&s.m);
    mg_cond_init(&s.c);
    mg_thread t;
    int64_t start = mg_monotonic_ns();
    int64_t deadline = start + 10000 * MS;
    check(mg_thread_start(&t, set_flag_later, &s) == 0, "a thread starts");
    mg_mutex_lock(&s.m);
    int timed_out = 0;
    while (!s.flag && !timed_out) {
        timed_out = mg_cond_timedwait(&s.c, &s.m, deadline) != 0 && mg_monotonic_ns() >= deadline;
    }
    mg_mutex_unlock(&s.m);
    int64_t took = mg_monotonic_ns() - start;
    mg_thread_join(t);
    check(s.flag && !timed_out, "a signal from another thread ends a timed wait");
    check(took < 5000 * MS, "the woken wait did not run to its deadline");
    mg_cond_destroy(&s.c);
    mg_mutex_destroy(&s.m);
}

static void
generation_waiter(void *p)
{
    shared_t *s = p;
    mg_mutex_lock(&s->m);
    s->waiting++;
    int64_t deadline = mg_monotonic_ns() + 20000 * MS;
    while (s->generation == 0 && mg_monotonic_ns() < deadline) {
        mg_cond_timedwait(&s->c, &s->m, deadline);
    }
    if (s->generation != 0) {
        s->awake++;
    }
    mg_mutex_unlock(&s->m);
}

static volatile int64_t yield_flag;

static void
set_yield_flag(void *p)
{
    (void)p;
    mg_atomic_add_i64(&yield_flag, 1);
}

/* A thread that waits for another only by yielding (as mg_poll_briefly spins) sees it
 * run: on one CPU, mg_thread_yield is what lets it. */
static void
test_thread_yield(void)
{
    mg_thread t;
    check(mg_thread_start(&t, set_yield_flag, NULL) == 0, "a thread starts");
    int64_t deadline = mg_monotonic_ns() + 10000 * MS;
    while (mg_atomic_load_i64(&yield_flag) == 0 && mg_monotonic_ns() < deadline) {
        mg_thread_yield();
    }
    mg_thread_join(t);
    check(mg_atomic_load_i64(&yield_flag) == 1, "a thread that only yields lets another one run");
}

#define WAITERS 16

static void
test_cond_many_waiters(void)
{
    shared_t s;
    memset(&s, 0, sizeof(s));
    mg_mutex_init(&s.m);
    mg_cond_init(&s.c);
    mg_thread t[WAITERS];
    int started = 0;
    for (int i = 0; i < WAITERS; i++) {
        started += mg_thread_start(&t[i], generation_waiter, &s) == 0;
    }
    /* all of them inside the wait (bounded: 10 s) */
    int64_t until = mg_monotonic_ns() + 10000 * MS;
    for (;;) {
        mg_mutex_lock(&s.m);
        int n = s.waiting;
        mg_mutex_unlock(&s.m);
        if (n == started || mg_monotonic_ns() > until) {
            break;
        }
        sleep_ms(5);
    }
    int64_t start = mg_monotonic_ns();
    mg_mutex_lock(&s.m);
    s.generation = 1;
    mg_mutex_unlock(&s.m);
    mg_cond_broadcast(&s.c);
    for (int i = 0; i < started; i++) {
        mg_thread_join(t[i]);
    }
    check(started == WAITERS && s.awake == WAITERS, "a broadcast wakes all 16 waiters");
    check(mg_monotonic_ns() - start < 5000 * MS, "... at once, not at their deadlines");
    mg_cond_destroy(&s.c);
    mg_mutex_destroy(&s.m);
}

/* ------------------------------------------------------------------ semaphore */

static void
test_sem_basics(void)
{
    mg_sem s;
    check(mg_sem_init(&s, 3) == 0, "a semaphore is made with a count of 3");
    int got = mg_sem_trywait(&s) + mg_sem_trywait(&s) + mg_sem_trywait(&s);
    check(got == 3 && !mg_sem_trywait(&s), "trywait takes 3 units, not a 4th");
    mg_sem_post(&s);
    check(mg_sem_trywait(&s), "a post gives one unit back");

    int64_t start = mg_monotonic_ns();
    int64_t deadline = start + 80 * MS;
    int r = mg_sem_timedwait(&s, deadline);
    int64_t end = mg_monotonic_ns();
    check(!r && end >= deadline && end - deadline < LATE, "an empty semaphore's wait ends at its deadline");

    int64_t t = mg_monotonic_ns();
    r = mg_sem_timedwait(&s, t) + mg_sem_timedwait(&s, t - 1000 * MS) + mg_sem_timedwait(&s, 0);
    check(r == 0 && mg_monotonic_ns() - t < LATE, "waits with a deadline now or past return 0 at once");
    mg_sem_post(&s);
    check(mg_sem_timedwait(&s, 0) == 1, "a wait whose deadline passed still takes a unit that is there");
    mg_sem_destroy(&s);

    mg_sem big;
    check(mg_sem_init(&big, MG_SEM_VALUE_MAX) == 0 && mg_sem_trywait(&big),
          "a semaphore holds MG_SEM_VALUE_MAX");
    mg_sem_destroy(&big);
    /* freed with fewer units than it was made with (a channel's free places) */
    mg_sem part;
    mg_sem_init(&part, 5);
    mg_sem_trywait(&part);
    mg_sem_destroy(&part);
    check(1, "a semaphore is freed with fewer units than it was made with");
}

typedef struct {
    mg_sem ping, pong;
    int rounds;
    int done;
} pingpong_t;

static void
ponger(void *p)
{
    pingpong_t *pp = p;
    for (int i = 0; i < pp->rounds; i++) {
        if (!mg_sem_timedwait(&pp->ping, mg_monotonic_ns() + 10000 * MS)) {
            return;
        }
        mg_sem_post(&pp->pong);
    }
    pp->done = 1;
}

static void
test_sem_handoff(void)
{
    pingpong_t pp;
    pp.rounds = 20000;
    pp.done = 0;
    mg_sem_init(&pp.ping, 0);
    mg_sem_init(&pp.pong, 0);
    mg_thread t;
    mg_thread_start(&t, ponger, &pp);
    int ok = 1;
    int64_t start = mg_monotonic_ns();
    for (int i = 0; i < pp.rounds && ok; i++) {
        mg_sem_post(&pp.ping);
        ok = mg_sem_timedwait(&pp.pong, mg_monotonic_ns() + 10000 * MS);
    }
    int64_t took = mg_monotonic_ns() - start;
    mg_thread_join(t);
    check(ok && pp.done, "20,000 hand-offs between two threads, none lost");
    printf("# hand-off: %.2f us per round trip\n", took / 1000.0 / pp.rounds);
    mg_sem_destroy(&pp.ping);
    mg_sem_destroy(&pp.pong);
}

#define TAKERS 8
#define EACH 2000

typedef struct {
    mg_sem s;
    volatile int64_t taken;
} pool_t;

static void
taker(void *p)
{
    pool_t *pl = p;
    for (int i = 0; i < EACH; i++) {
        if (!mg_sem_timedwait(&pl->s, mg_monotonic_ns() + 10000 * MS)) {
            return;
        }
        mg_atomic_add_i64(&pl->taken, 1);
    }
}

static void
test_sem_many_waiters(void)
{
    pool_t pl;
    pl.taken = 0;
    mg_sem_init(&pl.s, 0);
    mg_thread t[TAKERS];
    for (int i = 0; i < TAKERS; i++) {
        mg_thread_start(&t[i], taker, &pl);
    }
    for (int i = 0; i < TAKERS * EACH; i++) {
        mg_sem_post(&pl.s);
    }
    for (int i = 0; i < TAKERS; i++) {
        mg_thread_join(t[i]);
    }
    check(mg_atomic_load_i64(&pl.taken) == TAKERS * EACH && !mg_sem_trywait(&pl.s),
          "8 waiters take 16,000 posts exactly, none left over");
    mg_sem_destroy(&pl.s);
}

/* ------------------------------------------------------------------ memory */

static void
test_pages(void)
{
    size_t sizes[] = {1, 4096, (1 << 20) + 3, (size_t)64 << 20};
    int ok = 1;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        unsigned char *p = mg_pages_alloc(sizes[i]);
        if (p == NULL || ((uintptr_t)p & 4095) != 0) {
            ok = 0;
            continue;
        }
        ok &= p[0] == 0 && p[sizes[i] / 2] == 0 && p[sizes[i] - 1] == 0;
        memset(p, 0xAB, sizes[i]);
        ok &= p[sizes[i] - 1] == 0xAB;
        mg_pages_free(p, sizes[i]);
    }
    unsigned char *z = mg_pages_alloc(0);
    ok &= z != NULL;
    mg_pages_free(z, 0);
    mg_pages_free(NULL, 10);
    check(ok, "pages: aligned to 4 KiB, zeroed, writable, freed (1 B to 64 MiB, and 0)");
}

static void
test_shm(void)
{
    void *mem;
    int fd;
    int rc = mg_shm_create(10000, &mem, &fd);
#if defined(MG_LINUX)
    int ok = rc == 0 && fd >= 0 && mem != NULL && ((unsigned char *)mem)[9999] == 0;
    if (rc == 0) {
        memset(mem, 1, 10000);
        mg_shm_free(mem, 10000, fd);
    }
    check(ok, "shared memory (memfd): made, zeroed, writable, freed");
#else
    check(rc == -1 && fd == -1 && mem == NULL, "shared memory is not available here: -1, and no fd");
#endif
    uint64_t room = mg_memory_and_swap();
#if defined(MG_LINUX) || defined(MG_WINDOWS)
    check(room > ((uint64_t)64 << 20), "the machine's memory and swap is known");
#else
    check(1, "the machine's memory and swap: not checked on this OS");
#endif
    (void)room;
    check(mg_cpu_count() >= 1, "the CPUs this process may run on: at least one");
}

static void
test_atomics(void)
{
    int64_t out = 7;
    volatile int64_t counter = 5;
    check(mg_atomic_add_fetch_i64(&counter, 2) == 7 && mg_atomic_add_fetch_i64(&counter, -7) == 0,
          "add and fetch gives the new value");
    mg_atomic_store_i64(&counter, 42);
    check(mg_atomic_load_i64(&counter) == 42, "a stored value is loaded");
    check(!mg_add_overflow_i64(INT64_MAX - 1, 1, &out) && out == INT64_MAX, "add up to INT64_MAX");
    out = 7;
    check(mg_add_overflow_i64(INT64_MAX, 1, &out) && out == 7, "INT64_MAX + 1 overflows, *out untouched");
    check(mg_add_overflow_i64(INT64_MIN, -1, &out) && out == 7, "INT64_MIN - 1 overflows");
    check(!mg_add_overflow_i64(-5, 3, &out) && out == -2, "-5 + 3 = -2");
    volatile int64_t v = 0;
    mg_atomic_add_i64(&v, 5);
    check(mg_atomic_load_i64(&v) == 5, "atomic add and load");
    for (int i = 0; i < 100; i++) {
        mg_cpu_relax();
    }
    check(1, "mg_cpu_relax");
}

static MG_THREAD_LOCAL int tls_value = 0;

static void
set_tls(void *p)
{
    tls_value = 42;
    *(int *)p = tls_value;
}

static void
test_thread_local(void)
{
    int seen = 0;
    mg_thread t;
    tls_value = 1;
    mg_thread_start(&t, set_tls, &seen);
    mg_thread_join(t);
    check(seen == 42 && tls_value == 1, "MG_THREAD_LOCAL: each thread its own");
}

int
main(void)
{
#if defined(MG_WINDOWS)
    const char *os = "Windows";
#elif defined(MG_MACOS)
    const char *os = "macOS";
#else
    const char *os = "Linux";
#endif
#if defined(MG_SEM_GENERIC)
    const char *sem = "mutex+cond semaphore";
#else
    const char *sem = "POSIX semaphore";
#endif
    printf("# manygil platform layer tests: %s branch, %s\n", os, sem);
    test_clock();
    test_cond_timeout();
    test_cond_wakeup();
    test_thread_yield();
    test_cond_many_waiters();
    test_sem_basics();
    test_sem_handoff();
    test_sem_many_waiters();
    test_pages();
    test_shm();
    test_atomics();
    test_thread_local();
    printf("1..%d\n# %d checks, %d failed\n", checks, checks, failures);
    return failures ? 1 : 0;
}
