# Times RcppML 1.0's svd() for benchmarks/bench_svd.py on a matrix written by peers.dump_csc.
# Usage: Rscript rcppml_svd.R DIR K THREADS REPS CENTER
# Prints "<median seconds> <method> <iterations>" and then the k singular values, one line.
# The clock covers svd() only (R start-up and reading the matrix are outside it).
suppressMessages({library(RcppML); library(Matrix)})
arg <- commandArgs(TRUE)
dir <- arg[1]; k <- as.integer(arg[2]); threads <- as.integer(arg[3])
reps <- as.integer(arg[4]); center <- as.logical(arg[5])
source(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1])), "rcppml_csc.R"))
A <- read_csc(dir)
invisible(RcppML::svd(A, k = k, center = center, threads = threads))  # warm-up
secs <- numeric(reps)
for (r in seq_len(reps)) {
  secs[r] <- system.time(res <- RcppML::svd(A, k = k, center = center,
                                             threads = threads))[["elapsed"]]
}
cat(sprintf("%.6f %s %d\n", median(secs), res@misc$method, as.integer(res@misc$iters_per_factor)))
cat(sprintf("%.12g", res@d), "\n")
