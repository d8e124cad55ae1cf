# Fits RcppML 1.0's nmf() under each loss on a CSC matrix dumped as raw vectors
# (benchmarks/bench_losses.py writes them: dims.bin int32 [m, n, nnz], p.bin, i.bin int32,
# x.bin float64) and saves each model for dask_factor to score.
# Usage: Rscript rcppml_losses.R DIR K MAXIT TOL THREADS LOSS [LOSS ...]
# A LOSS may carry options after "+" (zi_row, zi_col, robust, mae: "nb+zi_row", "mse+robust").
# Per case, writes DIR/rcppml_<case>_{w,d,h,theta,pi}.bin (float64; theta and pi only when RcppML
# returns them) and prints "case seconds iterations rcppml_loss".
suppressMessages({library(RcppML); library(Matrix)})
a <- commandArgs(TRUE); d <- a[1]; k <- as.integer(a[2]); maxit <- as.integer(a[3])
tol <- as.numeric(a[4]); thr <- as.integer(a[5]); losses <- a[6:length(a)]
source(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1])), "rcppml_csc.R"))
A <- read_csc(d)
for (loss in losses) {
  # a case: a loss, then options after "+" (zi_row, zi_col, robust, mae), as bench_losses.py
  parts <- strsplit(loss, "+", fixed = TRUE)[[1]]
  args <- list(A, k, maxit = maxit, tol = tol, threads = thr, seed = 1)
  if (parts[1] == "kl") { args$loss <- "gp"; args$dispersion <- "none" } else args$loss <- parts[1]
  for (o in parts[-1]) {
    if (o == "zi_row") args$zi <- "row" else if (o == "zi_col") args$zi <- "col"
    else if (o == "robust") args$robust <- TRUE else if (o == "mae") args$robust <- "mae"
    else stop("unknown option ", o)
  }
  t <- system.time(m <- do.call(nmf, args))[["elapsed"]]
  f <- function(s) file.path(d, sprintf("rcppml_%s_%s.bin", loss, s))
  writeBin(as.double(m@w), f("w")); writeBin(as.double(m@d), f("d"))
  writeBin(as.double(m@h), f("h"))
  th <- m@misc$theta
  if (!is.null(th)) writeBin(as.double(th), f("theta"))
  pz <- if (!is.null(m@misc$pi_row)) m@misc$pi_row else m@misc$pi_col
  if (!is.null(pz)) writeBin(as.double(pz), f("pi"))
  cat(sprintf("%s %.4f %d %.10g\n", loss, t, as.integer(m@misc$iter), as.double(m@misc$loss)))
}
