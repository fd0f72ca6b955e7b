/* SPDX-License-Identifier: MIT */
/*
 * A main for the fuzz harnesses in the normal (gcc) build: runs
 * LLVMFuzzerTestOneInput on every file of the directories given, so the
 * committed seeds and every crash ever found (tests/data/fuzz/<harness>/)
 * are replayed by ctest in the plain and the sanitizer builds.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  size_t cap = 4096, len = 0;
  uint8_t *buf = malloc(cap);
  size_t n;
  while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
    len += n;
    if (len == cap) {
      uint8_t *b = realloc(buf, cap * 2);
      if (!b) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = b;
      cap *= 2;
    }
  }
  fclose(f);
  if (!buf) return -1;
  /* An exact-size copy, so the sanitizers see reads past the end. */
  uint8_t *exact = malloc(len ? len : 1);
  if (!exact) return -1;
  memcpy(exact, buf, len);
  free(buf);
  LLVMFuzzerTestOneInput(exact, len);
  free(exact);
  return 0;
}

int main(int argc, char **argv) {
  int files = 0;
  for (int i = 1; i < argc; i++) {
    DIR *d = opendir(argv[i]);
    if (!d) continue; /* no regression cases for this harness yet */
    struct dirent *e;
    while ((e = readdir(d))) {
      if (e->d_name[0] == '.' || !strcmp(e->d_name, "README.md")) continue;
      char path[4096];
      snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
      if (replay_file(path) != 0) {
        fprintf(stderr, "cannot read %s\n", path);
        return 1;
      }
      files++;
    }
    closedir(d);
  }
  printf("%d inputs replayed without a failure\n", files);
  return files > 0 ? 0 : 1;
}
