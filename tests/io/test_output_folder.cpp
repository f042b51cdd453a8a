// Where an image's masks go: OUT/<stem>/ for the first image of a stem, the file name for
// a different file met later with the same stem; stems that cannot be folders refused.
#include <gtest/gtest.h>

#include "m2n2/core/error.hpp"
#include "m2n2/io/output_folder.hpp"

using namespace m2n2;

TEST(OutputFolders, SameStemGetsSeparateFolders) {
  OutputFolders f;
  EXPECT_EQ(f.folder("/d/a.png"), "a");
  EXPECT_EQ(f.folder("/d/b.png"), "b");
  EXPECT_EQ(f.folder("/d/a.jpg"), "a.jpg");
  EXPECT_EQ(f.folder("/e/a.jpg"), "a.jpg~2");
  EXPECT_EQ(f.folder("/e/a.jpg.png"), "a.jpg.png");  // its stem "a.jpg" is taken
  EXPECT_EQ(f.folder("/d/a.png"), "a");             // the same file again: its folder
  EXPECT_EQ(f.folder("/d/a.jpg"), "a.jpg");
}

TEST(OutputFolders, RefusesStemsThatAreNotFolders) {
  OutputFolders f;
  EXPECT_THROW(f.folder("/d/..png"), Error);  // stem "."
  EXPECT_THROW(f.folder("/d/..."), Error);    // stem ".."
  EXPECT_THROW(f.folder("/d/"), Error);       // no file name
  EXPECT_EQ(f.folder("/d/.hidden.png"), ".hidden");
}
