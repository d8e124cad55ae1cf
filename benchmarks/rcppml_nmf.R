# Times RcppML 1.0's nmf() for benchmarks/bench_nmf.py on a matrix written by peers.dump_csc.
# Usage: Rscript rcppml_nmf.R DIR K MAXIT THREADS REPS
# Prints "<median seconds per iteration> <MSE of the last model>".
suppressMessages({library(RcppML); library(Matrix)})
arg <- commandArgs(TRUE)
dir <- arg[1]; k <- as.integer(arg[2]); maxit <- as.integer(arg[3])
threads <- as.integer(arg[4]); reps <- as.integer(arg[5])
source(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1])), "rcppml_csc.R"))
A <- read_csc(dir)
invisible(nmf(A, k, maxit = 2, tol = 0, threads = threads, seed = 1))  # warm-up
per_it <- numeric(reps)
for (r in seq_len(reps)) {
  el <- system.time(model <- nmf(A, k, maxit = maxit, tol = 0, threads = threads, seed = 1))
  per_it[r] <- el[["elapsed"]] / maxit
}
cat(sprintf("%.6f %.8f\n", median(per_it), evaluate(model, A)))
