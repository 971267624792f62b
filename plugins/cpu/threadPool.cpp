/*
 * threadPool.cpp: serialParallelFor and the std::thread ThreadPool (see threadPool.h).
 */
#include "cpu/threadPool.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>

namespace tensorkiln::cpu
{
namespace
{

//! Below this many floating-point operations in all, a loop runs on the calling thread: waking workers costs more.
constexpr double kSERIAL_FLOPS = 2e5;
//! Smallest chunk worth handing to another thread, in floating-point operations.
constexpr double kCHUNK_FLOPS = 5e4;
//! Chunks per thread when items are cheap enough to split finely: room to balance uneven items.
constexpr int64_t kCHUNKS_PER_THREAD = 8;

//! The pool whose task the current thread is running, to run nested loops serially.
thread_local ThreadPool const* tInsidePool = nullptr;

class InsideGuard
{
public:
    explicit InsideGuard(ThreadPool const* pool) noexcept
        : mPrevious(tInsidePool)
    {
        tInsidePool = pool;
    }
    ~InsideGuard()
    {
        tInsidePool = mPrevious;
    }
    InsideGuard(InsideGuard const&) = delete;
    InsideGuard& operator=(InsideGuard const&) = delete;

private:
    ThreadPool const* mPrevious;
};

} // namespace

ParallelFor serialParallelFor()
{
    return [](int64_t count, double /*cost*/, std::function<void(int64_t, int64_t)> const& task)
    {
        if (count > 0)
        {
            task(0, count);
        }
    };
}

struct ThreadPool::Loop
{
    std::function<void(int64_t, int64_t)> const* task{nullptr};
    int64_t count{0};
    int64_t chunk{1};
    std::atomic<int64_t> next{0};
    std::mutex errorMutex;
    std::exception_ptr error;
};

ThreadPool::ThreadPool(int threads)
{
    if (threads <= 0)
    {
        threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    }
    mWorkers.reserve(static_cast<size_t>(threads - 1));
    for (int i = 1; i < threads; ++i)
    {
        mWorkers.emplace_back([this] { workerMain(); });
    }
}

ThreadPool::~ThreadPool()
{
    {
        std::lock_guard<std::mutex> lock(mMutex);
        mStop = true;
    }
    mWake.notify_all();
    for (std::thread& worker : mWorkers)
    {
        worker.join();
    }
}

void ThreadPool::drain(Loop& loop)
{
    for (;;)
    {
        int64_t const begin = loop.next.fetch_add(loop.chunk, std::memory_order_relaxed);
        if (begin >= loop.count)
        {
            return;
        }
        int64_t const end = std::min(begin + loop.chunk, loop.count);
        try
        {
            (*loop.task)(begin, end);
        }
        catch (...)
        {
            std::lock_guard<std::mutex> lock(loop.errorMutex);
            if (!loop.error)
            {
                loop.error = std::current_exception();
            }
        }
    }
}

void ThreadPool::workerMain()
{
    uint64_t seen = 0;
    for (;;)
    {
        Loop* loop = nullptr;
        {
            std::unique_lock<std::mutex> lock(mMutex);
            mWake.wait(lock, [&] { return mStop || (mLoop != nullptr && mGeneration != seen); });
            if (mStop)
            {
                return;
            }
            seen = mGeneration;
            loop = mLoop;
            ++mActive; // the caller waits for this worker before the loop (on its stack) goes away
        }
        {
            InsideGuard inside(this);
            drain(*loop);
        }
        std::lock_guard<std::mutex> lock(mMutex);
        if (--mActive == 0)
        {
            mDone.notify_all();
        }
    }
}

void ThreadPool::run(int64_t count, double cost, std::function<void(int64_t, int64_t)> const& task)
{
    if (count <= 0)
    {
        return;
    }
    double const perItem = std::max(cost, 1.0);
    if (mWorkers.empty() || count == 1 || tInsidePool == this || perItem * static_cast<double>(count) < kSERIAL_FLOPS)
    {
        task(0, count);
        return;
    }
    std::lock_guard<std::mutex> runLock(mRunMutex);
    auto const threadCount = static_cast<int64_t>(threads());
    int64_t const fair = (count + threadCount - 1) / threadCount;
    int64_t const fine = std::max<int64_t>(1, count / (threadCount * kCHUNKS_PER_THREAD));
    auto const smallest = static_cast<int64_t>(std::ceil(kCHUNK_FLOPS / perItem));
    Loop loop;
    loop.task = &task;
    loop.count = count;
    loop.chunk = std::min(fair, std::max(fine, smallest));
    {
        std::lock_guard<std::mutex> lock(mMutex);
        mLoop = &loop;
        ++mGeneration;
    }
    mWake.notify_all();
    {
        InsideGuard inside(this);
        drain(loop);
    }
    {
        // Every chunk is claimed now: wait for the workers still running one, not for those that never woke (on a
        // loaded machine a sleeping worker may not run for milliseconds). Late ones find mLoop cleared.
        std::unique_lock<std::mutex> lock(mMutex);
        mDone.wait(lock, [&] { return mActive == 0; });
        mLoop = nullptr;
    }
    if (loop.error)
    {
        std::rethrow_exception(loop.error);
    }
}

ParallelFor ThreadPool::parallelFor()
{
    return [this](int64_t count, double cost, std::function<void(int64_t, int64_t)> const& task)
    { run(count, cost, task); };
}

} // namespace tensorkiln::cpu
