/* SPDX-License-Identifier: MIT */
/*
 * /metrics across --workers N: the workers share one port and the kernel
 * hands a scrape to any of them, so each worker publishes its figures, as
 * text labelled worker="k", to memory the supervisor maps before it forks
 * them, and whichever worker is scraped answers for all of them (its own
 * figures fresh, the others' as of their last publication, at most a
 * second old). Without workers nothing of this exists and /metrics is the
 * process's own, unlabelled.
 */
#ifndef PRESENCED_METRICS_H
#define PRESENCED_METRICS_H

#include <stdint.h>

struct srv;
struct metrics_shm;

/* Supervisor, before the first fork: n slots in shared memory, or NULL
 * (each worker then answers /metrics for itself alone, still labelled). */
struct metrics_shm *metrics_shm_new(uint32_t n);
/* Supervisor: worker k (1..n) ended; its figures are dropped until its
 * replacement publishes. */
void metrics_shm_clear(struct metrics_shm *m, uint32_t k);
/* A worker's housekeeping tick: publishes its figures once a second. */
void metrics_publish(struct srv *s, int64_t now_mono_ms);

#endif
