"""Re-run a batch sampler until a fixed number of iterations (training is counted in iterations)."""
from torch.utils.data.sampler import Sampler


class IterationBasedBatchSampler(Sampler):
    """Batches from ``batch_sampler``, epoch after epoch, for iterations start_iter+1 .. num_iterations.

    Yields exactly ``num_iterations - start_iter`` batches (resuming at ``start_iter`` skips the
    batches already trained on). Before each pass the inner sampler's ``set_epoch(iteration)`` is
    called when it has one (DistributedSampler), so every pass is shuffled differently.
    ``len()`` is ``num_iterations``, which the training loop reads as its last iteration.
    """

    def __init__(self, batch_sampler, num_iterations, start_iter=0):
        self.batch_sampler = batch_sampler
        self.num_iterations = num_iterations
        self.start_iter = start_iter

    def __iter__(self):
        iteration = self.start_iter
        while iteration < self.num_iterations:
            sampler = getattr(self.batch_sampler, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(iteration)
            produced = False
            for batch in self.batch_sampler:
                produced = True
                iteration += 1
                yield batch
                if iteration >= self.num_iterations:
                    return
            if not produced:
                raise RuntimeError("the batch sampler yields no batch (empty dataset?)")

    def __len__(self):
        return self.num_iterations
