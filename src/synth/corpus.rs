//! A few paragraphs of plain English, written for this project. The synthetic tokenizer learns
//! its merged pieces from it, and tests and benchmarks feed it to synthetic models.

pub const SAMPLE_TEXT: &str = "\
The old lighthouse stood at the end of a narrow spit of land, where the river met the sea. \
Every evening the keeper climbed the one hundred and twelve steps to light the lamp, and every \
morning he climbed them again to put it out. Between those two walks he mended nets, wrote \
letters to his sister in the city, and kept a careful record of the weather: the direction of \
the wind, the height of the waves, the colour of the sky at noon and at dusk.

In spring the fishing boats came back from the south, and the harbour filled with noise. \
Children ran along the wall to count the sails. Traders brought salt, rope, flour and news \
from other towns. The keeper listened to the news but believed only half of it, because he \
had learned that a story grows longer with every mile it travels.

One winter a storm broke three windows in the lamp room. The keeper covered them with boards \
and kept the light burning through the night, turning the wick down so that the oil would \
last until morning. When the wind finally fell, he found a small boat resting on the rocks \
below, its owner asleep under a sail. They drank hot tea together and talked about the \
places they had seen, the people they had known, and the strange way that time seems to \
move more slowly near the water.

Numbers matter to a keeper: 3 lamps, 12 wicks, 40 litres of oil a week, 365 nights a year. \
He wrote them all down in the same brown book, in the same small hand, year after year. \
When people asked him why he kept such a record, he said that a lighthouse is a promise, \
and a promise is only as good as the care that goes into keeping it.
";
