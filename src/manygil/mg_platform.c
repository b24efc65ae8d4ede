/*
 * manygil's platform layer (see mg_platform.h): the only file of the native module that
 * includes an operating system's headers or calls it.  Process-global state owned
 * here: the at-fork child hook (installed once, under pthread_once).
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE   /* memfd_create, sem_clockwait */
#endif
#include "mg_platform.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#if defined(MG_WINDOWS)
#  include <process.h>
#else
#  include <sched.h>
#  include <sys/mman.h>
#  include <time.h>
#  include <unistd.h>
#  if defined(MG_LINUX)
#    include <sys/sysinfo.h>
#  elif defined(MG_MACOS)
#    include <sys/sysctl.h>
#  endif
#endif

/* ------------------------------------------------------------------ time */

int64_t
mg_monotonic_ns(void)
{
#if defined(MG_WINDOWS)
    static LARGE_INTEGER freq;   /* fixed at boot: a race writes the same value */
    LARGE_INTEGER t;
    if (freq.QuadPart == 0) {
        QueryPerformanceFrequency(&freq);
    }
    QueryPerformanceCounter(&t);
    /* split so that t * 1e9 cannot overflow */
    int64_t secs = t.QuadPart / freq.QuadPart, rest = t.QuadPart % freq.QuadPart;
    return secs * 1000000000 + rest * 1000000000 / freq.QuadPart;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
#endif
}

int64_t
mg_deadline(double seconds)
{
    int64_t now = mg_monotonic_ns();
    if (!(seconds > 0)) {
        return now;
    }
    double ns = seconds * 1e9;
    if (ns >= (double)(MG_NEVER - now)) {
        return MG_NEVER;
    }
    return now + (int64_t)ns;
}

#if defined(MG_WINDOWS) || defined(MG_MACOS)
/* Nanoseconds left until ``deadline``, 0 if it passed (for waits that are relative). */
static int64_t
remaining(int64_t deadline)
{
    int64_t now = mg_monotonic_ns();
    return deadline > now ? deadline - now : 0;
}
#endif

#if defined(MG_WINDOWS)
/* A relative wait in milliseconds, rounded up (a wait never ends before its deadline)
 * and kept below INFINITE. */
static DWORD
millis(int64_t deadline)
{
    if (deadline == MG_NEVER) {
        return INFINITE - 1;
    }
    int64_t ms = (remaining(deadline) + 999999) / 1000000;
    return ms >= (int64_t)INFINITE ? INFINITE - 1 : (DWORD)ms;
}
#endif

/* ------------------------------------------------------------------ cond */

#if !defined(MG_WINDOWS)
void
mg_cond_init(mg_cond *c)
{
#  if defined(MG_LINUX)
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(c, &attr);
    pthread_condattr_destroy(&attr);
#  else
    pthread_cond_init(c, NULL);   /* macOS: waits are relative, no clock to choose */
#  endif
}
#endif

int
mg_cond_timedwait(mg_cond *c, mg_mutex *m, int64_t deadline)
{
#if defined(MG_WINDOWS)
    DWORD ms = millis(deadline);
    if (ms == 0) {
        return 1;
    }
    return SleepConditionVariableSRW(c, m, ms, 0) ? 0 : 1;
#elif defined(MG_MACOS)
    int64_t left = remaining(deadline);
    if (left == 0) {
        return 1;
    }
    struct timespec rel;
    rel.tv_sec = (time_t)(left / 1000000000);
    rel.tv_nsec = (long)(left % 1000000000);
    return pthread_cond_timedwait_relative_np(c, m, &rel) != 0;
#else
    struct timespec abs;
    abs.tv_sec = (time_t)(deadline / 1000000000);
    abs.tv_nsec = (long)(deadline % 1000000000);
    return pthread_cond_timedwait(c, m, &abs) != 0;
#endif
}

/* ------------------------------------------------------------------ semaphore */

#if defined(MG_SEM_GENERIC)
int
mg_sem_init(mg_sem *s, unsigned value)
{
    mg_mutex_init(&s->mu);
    mg_cond_init(&s->cond);
    s->value = value;
    s->waiters = 0;
    return 0;
}

void
mg_sem_destroy(mg_sem *s)
{
    mg_cond_destroy(&s->cond);
    mg_mutex_destroy(&s->mu);
}

void
mg_sem_post(mg_sem *s)
{
    mg_mutex_lock(&s->mu);
    s->value++;
    int wake = s->waiters > 0;
    mg_mutex_unlock(&s->mu);
    if (wake) {
        mg_cond_signal(&s->cond);
    }
}

int
mg_sem_timedwait(mg_sem *s, int64_t deadline)
{
    int got = 0;
    mg_mutex_lock(&s->mu);
    for (;;) {
        if (s->value > 0) {
            s->value--;
            got = 1;
            break;
        }
        s->waiters++;
        int ended = deadline == MG_NEVER ? (mg_cond_wait(&s->cond, &s->mu), 0)
                                         : mg_cond_timedwait(&s->cond, &s->mu, deadline);
        s->waiters--;
        if (ended && s->value == 0) {
            break;
        }
    }
    mg_mutex_unlock(&s->mu);
    return got;
}
#else
int
mg_sem_timedwait(mg_sem *s, int64_t deadline)
{
    struct timespec abs;
    abs.tv_sec = (time_t)(deadline / 1000000000);
    abs.tv_nsec = (long)(deadline % 1000000000);
    int rc;
    do {
        rc = sem_clockwait(s, CLOCK_MONOTONIC, &abs);
    } while (rc != 0 && errno == EINTR);
    return rc == 0;
}
#endif

/* ------------------------------------------------------------------ memory */

void *
mg_pages_alloc(size_t size)
{
    if (size == 0) {
        size = 1;
    }
#if defined(MG_WINDOWS)
    return VirtualAlloc(NULL, size, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
#else
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
#endif
}

void
mg_pages_free(void *p, size_t size)
{
    if (p == NULL) {
        return;
    }
#if defined(MG_WINDOWS)
    (void)size;
    VirtualFree(p, 0, MEM_RELEASE);
#else
    munmap(p, size > 0 ? size : 1);
#endif
}

int
mg_shm_create(size_t size, void **mem, int *fd)
{
    *mem = NULL;
    *fd = -1;
#if defined(MG_LINUX)
    size_t len = size > 0 ? size : 1;
    int f = memfd_create("manygil-shared-buffer", MFD_CLOEXEC);
    if (f < 0) {
        return -1;
    }
    if (ftruncate(f, (off_t)len) < 0) {
        close(f);
        return -1;
    }
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
    if (p == MAP_FAILED) {
        close(f);
        return -1;
    }
    *mem = p;
    *fd = f;
    return 0;
#else
    (void)size;
    return -1;   /* not available: no memfd (blocks stay in this process) */
#endif
}

void
mg_shm_free(void *mem, size_t size, int fd)
{
#if defined(MG_LINUX)
    munmap(mem, size > 0 ? size : 1);
    close(fd);
#else
    (void)mem;
    (void)size;
    (void)fd;
#endif
}

uint64_t
mg_memory_and_swap(void)
{
#if defined(MG_LINUX)
    struct sysinfo si;
    if (sysinfo(&si) != 0) {
        return 0;
    }
    return ((uint64_t)si.totalram + si.totalswap) * si.mem_unit;
#elif defined(MG_MACOS)
    uint64_t bytes = 0;
    size_t len = sizeof(bytes);
    if (sysctlbyname("hw.memsize", &bytes, &len, NULL, 0) != 0) {
        return 0;
    }
    return bytes;
#elif defined(MG_WINDOWS)
    MEMORYSTATUSEX ms;
    ms.dwLength = sizeof(ms);
    if (!GlobalMemoryStatusEx(&ms)) {
        return 0;
    }
    return ms.ullTotalPageFile;
#else
    return 0;
#endif
}

int
mg_cpu_count(void)
{
#if defined(MG_WINDOWS)
    DWORD n = GetActiveProcessorCount(ALL_PROCESSOR_GROUPS);
    return n > 0 ? (int)n : 1;
#else
#  if defined(MG_LINUX)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) {
        return CPU_COUNT(&set);
    }
#  endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
#endif
}

/* ------------------------------------------------------------------ fork, exit */

#if !defined(MG_WINDOWS)
static void (*atfork_child)(void);
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void
atfork_install(void)
{
    (void)pthread_atfork(NULL, NULL, atfork_child);
}
#endif

void
mg_atfork_child_once(void (*child)(void))
{
#if defined(MG_WINDOWS)
    (void)child;   /* no fork() */
#else
    if (atfork_child == NULL) {
        atfork_child = child;   /* one hook in the process: every caller passes it */
    }
    (void)pthread_once(&atfork_once, atfork_install);
#endif
}

void
mg_exit_now(const char *msg, size_t len)
{
#if defined(MG_WINDOWS)
    DWORD done;
    WriteFile(GetStdHandle(STD_ERROR_HANDLE), msg, (DWORD)len, &done, NULL);
    ExitProcess(1);
#else
    ssize_t unused = write(2, msg, len);
    (void)unused;
    _exit(1);
#endif
}

/* ------------------------------------------------------------------ threads */

typedef struct {
    void (*fn)(void *);
    void *arg;
} start_arg;

#if defined(MG_WINDOWS)
static unsigned __stdcall
trampoline(void *p)
#else
static void *
trampoline(void *p)
#endif
{
    start_arg a = *(start_arg *)p;
    free(p);
    a.fn(a.arg);
    return 0;
}

int
mg_thread_start(mg_thread *t, void (*fn)(void *), void *arg)
{
    start_arg *a = malloc(sizeof(*a));
    if (a == NULL) {
        return -1;
    }
    a->fn = fn;
    a->arg = arg;
#if defined(MG_WINDOWS)
    uintptr_t h = _beginthreadex(NULL, 0, trampoline, a, 0, NULL);
    if (h == 0) {
        free(a);
        return -1;
    }
    *t = (HANDLE)h;
    return 0;
#else
    if (pthread_create(t, NULL, trampoline, a) != 0) {
        free(a);
        return -1;
    }
    return 0;
#endif
}

void
mg_thread_yield(void)
{
#if defined(MG_WINDOWS)
    SwitchToThread();
#else
    sched_yield();
#endif
}

void
mg_thread_join(mg_thread t)
{
#if defined(MG_WINDOWS)
    WaitForSingleObject(t, INFINITE);
    CloseHandle(t);
#else
    pthread_join(t, NULL);
#endif
}
