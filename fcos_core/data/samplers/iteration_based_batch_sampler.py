"""Re-run a batch sampler until a fixed number of iterations (training is counted in iterations)."""
from torch.utils.data.sampler import Sampler


class IterationBasedBatchSampler(Sampler):
    """Batches from ``batch_sampler``, epoch after epoch, for iterations start_iter+1 .. num_iterations.

    Epochs are counted from 0; before each one the inner sampler's ``set_epoch(epoch)`` is called
    when it has one (TrainingSampler, DistributedSampler), so every epoch has its own order.
    Resuming at ``start_iter`` yields exactly the batches an uninterrupted run would have yielded
    after its first ``start_iter``: the epochs already done are counted (their lengths only, no
    data is loaded) and the batches already trained on in the current epoch are skipped. With a
    seeded inner sampler the batch of every iteration is therefore a function of (seed, iteration).

    Yields ``num_iterations - start_iter`` batches; ``len()`` is ``num_iterations``, which the
    training loop reads as its last iteration.
    """

    def __init__(self, batch_sampler, num_iterations, start_iter=0):
        self.batch_sampler = batch_sampler
        self.num_iterations = num_iterations
        self.start_iter = start_iter

    def _set_epoch(self, epoch):
        sampler = getattr(self.batch_sampler, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)

    def _epoch_length(self, epoch):
        self._set_epoch(epoch)
        n = len(self.batch_sampler)
        if n == 0:
            raise RuntimeError("the batch sampler yields no batch (empty dataset?)")
        return n

    def _resume_point(self):
        """(epoch, batches of that epoch already done) after ``start_iter`` iterations."""
        epoch, done = 0, 0
        while True:
            n = self._epoch_length(epoch)
            if done + n > self.start_iter:
                return epoch, self.start_iter - done
            done += n
            epoch += 1

    def __iter__(self):
        iteration = self.start_iter
        if iteration >= self.num_iterations:
            return
        epoch, skip = self._resume_point()
        while True:
            self._set_epoch(epoch)
            produced = False
            for position, batch in enumerate(self.batch_sampler):
                produced = True
                if position < skip:
                    continue
                iteration += 1
                yield batch
                if iteration >= self.num_iterations:
                    return
            if not produced:
                raise RuntimeError("the batch sampler yields no batch (empty dataset?)")
            epoch, skip = epoch + 1, 0

    def __len__(self):
        return self.num_iterations
