/* The claim protocol of thread_pool_executor (include/lqer/exec/thread_pool.hpp),
 * as a Promela model that spin checks over every interleaving of one caller
 * and two workers through three calls of changing size (1, 3, then 2 chunks:
 * growing, then shrinking — the pattern linear() produces).
 *
 *   spin -a thread_pool.pml && cc -o pan pan.c && ./pan -m100000
 *       the protocol as built: no assertion fails, no invalid end state (hang)
 *   spin -DOLD_PROTOCOL -a ...
 *       the protocol before issue #19 (the chunk count in a separate word,
 *       stored before the generation): spin finds a counterexample
 *
 * tests/exec/check_pool_model.sh runs both and requires exactly that outcome.
 *
 * What is modelled: each load, store and compare-and-swap of claim_, done_
 * and the job is one atomic step (sequentially consistent — the C++ code's
 * acquire/release pairs give the same orderings for these variables, see the
 * file comment of thread_pool.hpp); the spin-then-block waits are blocking
 * guards; a task is "start, record, finish". What is checked:
 *   - a claimed chunk is always a chunk of the call whose job the worker then
 *     reads (no pairing of one call's generation with another's job);
 *   - when parallel_for returns, each of its chunks ran exactly once and no
 *     task is running;
 *   - at the end no chunk of any call ran twice or ran beyond its call's count;
 *   - no hang: spin reports any state in which a process waits forever.
 */

#define WORKERS 2
#define CALLS 3
#define MAXC 3

byte chunks_of_call[CALLS];
/* claim_ = (claim_gen, claim_cnt, claim_next); OLD_PROTOCOL keeps the count in cog instead */
byte claim_gen = 0;
byte claim_cnt = 0;
byte claim_next = 0;
byte cog = 0;
byte job = 255;          /* the call whose job job_ holds */
byte job_chunks = 0;     /* job_.chunks (OLD_PROTOCOL reads the bound from it) */
byte done = 0;
byte running = 0;
byte execd[CALLS * MAXC];
bool stop = false;
byte exited = 0;

/* Claims and runs chunks of generation G until none is left (work_on). */
inline work_on(G) {
  do
  :: /* one load of the claim word */
#ifdef OLD_PROTOCOL
     atomic { lg = claim_gen; lc = claim_next };
     lC = cog;           /* a separate load: may already hold the next call's count */
#else
     atomic { lg = claim_gen; lc = claim_next; lC = claim_cnt };
#endif
     if
     :: lg != G -> break
     :: else -> skip
     fi;
     if
     :: lc >= lC -> break
     :: else -> skip
     fi;
     /* compare-and-swap (claim word) → +1 */
     atomic {
#ifdef OLD_PROTOCOL
       if
       :: claim_gen == lg && claim_next == lc -> claim_next++; ok = true
       :: else -> ok = false
       fi
#else
       if
       :: claim_gen == lg && claim_next == lc && claim_cnt == lC -> claim_next++; ok = true
       :: else -> ok = false
       fi
#endif
     };
     if
     :: ok ->
        atomic { myjob = job; mychunks = job_chunks };
        /* generation g is call g − 1's */
        assert(myjob == lg - 1);
        running++;
        execd[myjob * MAXC + lc]++;
        running--;
        done++
     :: else -> skip
     fi
  od
}

proctype worker() {
  byte seen = 0, lg, lc, lC, myjob, mychunks;
  bool ok;
  do
  :: atomic { claim_gen != seen -> seen = claim_gen };
     if
     :: stop -> break
     :: else -> skip
     fi;
     work_on(seen)
  od;
  exited++
}

proctype caller() {
  byte k = 0, c, lg, lc, lC, myjob, mychunks, g;
  bool ok;
  do
  :: k < CALLS ->
     job = k;
     job_chunks = chunks_of_call[k];
     done = 0;
#ifdef OLD_PROTOCOL
     cog = chunks_of_call[k];
     atomic { claim_gen++; claim_next = 0; g = claim_gen };
#else
     atomic { claim_gen++; claim_cnt = chunks_of_call[k]; claim_next = 0; g = claim_gen };
#endif
     work_on(g);
     done == chunks_of_call[k];  /* wait for the chunks others claimed */
     /* parallel_for returns: every chunk ran exactly once, none is running */
     assert(running == 0);
     c = 0;
     do
     :: c < chunks_of_call[k] -> assert(execd[k * MAXC + c] == 1); c++
     :: else -> break
     od;
     k++
  :: else -> break
  od;
  /* the destructor: stop_, then a generation with no chunk */
  stop = true;
  atomic { claim_gen++; claim_cnt = 0; claim_next = 0 };
  exited == WORKERS;
  /* nothing ran late or twice */
  k = 0;
  do
  :: k < CALLS ->
     c = 0;
     do
     :: c < MAXC ->
        if
        :: c < chunks_of_call[k] -> assert(execd[k * MAXC + c] == 1)
        :: else -> assert(execd[k * MAXC + c] == 0)
        fi;
        c++
     :: else -> break
     od;
     k++
  :: else -> break
  od
}

init {
  atomic {
    chunks_of_call[0] = 1;
    chunks_of_call[1] = 3;
    chunks_of_call[2] = 2;
    run worker();
    run worker();
    run caller()
  }
}
